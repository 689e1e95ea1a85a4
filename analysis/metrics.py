"""The metrics that can go on a frontier's axes (declared with the summary, sae_sweeps/summary.py)."""

from analysis.errors import AnalysisError
from sae_sweeps.summary import AXIS_METRICS, Metric

METRICS: dict[str, Metric] = AXIS_METRICS


def get_metric(name: str, axis: str) -> Metric:
    """The metric called `name`, or an AnalysisError naming the valid ones; `axis` is for the message."""
    if name not in METRICS:
        raise AnalysisError(f"unknown metric {name!r} for {axis}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def absence_reasons(*names: str) -> str:
    """"; a run lacks <name> when ..." for each named metric that completed runs may lack (empty for the others)."""
    metrics = dict.fromkeys(get_metric(name, "axis") for name in names)
    return "".join(f"; a run lacks {metric.name} when {metric.absent_when}" for metric in metrics if metric.absent_when)
