"""Registers the built-in trackers (kind ``tracker``) through the plugin hook."""
from crossvis.hookspecs import hookimpl
from crossvis.trackers.crossvis_tracker import CrossVISTracker
from crossvis.trackers.masktrack import MaskTrackScoringTracker


@hookimpl
def crossvis_register_components(registry) -> None:
    registry.register("tracker", "crossvis", CrossVISTracker)
    registry.register("tracker", "masktrack", MaskTrackScoringTracker)
