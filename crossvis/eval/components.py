"""Registers the evaluation components through the crossvis plugin hook."""
from crossvis.eval.ytvis import YTVISEvaluator
from crossvis.plugins import hookimpl


@hookimpl
def crossvis_register_components(registry):
    registry.register("evaluator", "youtube_vis", YTVISEvaluator)
