"""Registers the evaluation components through the crossvis plugin hook."""
from crossvis.eval.ytvis import OVISEvaluator, YTVISEvaluator
from crossvis.plugins import hookimpl


@hookimpl
def crossvis_register_components(registry):
    registry.register("evaluator", "youtube_vis", YTVISEvaluator)
    registry.register("evaluator", "ovis", OVISEvaluator)
