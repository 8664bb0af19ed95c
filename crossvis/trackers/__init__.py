"""Online association of per-frame detections into tracks, and their YouTube-VIS result entries.

Example::

    from crossvis.trackers import CrossVISTracker, VideoAccumulator

    tracker, acc = CrossVISTracker(), VideoAccumulator()
    for det in detections_per_frame:          # FrameDetections, one per frame
        acc.add(det, tracker.update(det))
    entries = acc.results(video_id=1)         # YouTube-VIS result entries
"""
from crossvis.trackers.accumulate import VideoAccumulator, encode_masks
from crossvis.trackers.crossvis_tracker import CrossVISTracker
from crossvis.trackers.masktrack import MaskTrackScoringTracker
from crossvis.trackers.memory import OnlineTracker, TrackMemory

__all__ = ["CrossVISTracker", "MaskTrackScoringTracker", "OnlineTracker", "VideoAccumulator", "TrackMemory",
           "encode_masks"]
