"""The metrics that can go on a frontier's axes: their direction and their axis label."""

from typing import NamedTuple

from analysis.errors import AnalysisError


class Metric(NamedTuple):
    """A summary metric that can be an axis of a frontier."""

    name: str
    """Key in summary.json and column in the runs table."""
    label: str
    """Axis label, with units."""
    higher_is_better: bool
    """Direction of improvement; the frontier keeps the best points in this direction."""


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("l0", "L0 (active latents per token)", False),
        Metric("alive_latents", "Alive latents (count)", False),
        Metric("ce_loss_increase", "CE loss increase (nats/token)", False),
        Metric("ce_loss_recovered", "CE loss recovered (fraction)", True),
        Metric("ce_loss_sae", "CE loss with SAE spliced in (nats/token)", False),
        Metric("kl", "KL(P_clean || P_sae) (nats/token)", False),
        Metric("fvu", "FVU (fraction of variance unexplained)", False),
        Metric("explained_variance", "Explained variance (fraction)", True),
        Metric("dead_fraction", "Dead latents (fraction)", False),
        Metric("dense_fraction", "Dense latents (fraction)", False),
    )
}


def get_metric(name: str, axis: str) -> Metric:
    """The metric called `name`, or an AnalysisError naming the valid ones; `axis` is for the message."""
    if name not in METRICS:
        raise AnalysisError(f"unknown metric {name!r} for {axis}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]
