"""Pareto frontiers (L0 vs CE-loss increase, and other metric pairs) of logged SAE sweeps.

Notebook use: `runs = load_runs("multirun/2026-11-23/15-00-00")`, then `result = analyze(runs, baseline="loss=local")`.
"""

from analysis.compare import compare_frontiers, interpolate_at
from analysis.errors import AnalysisError
from analysis.frontier import frontiers_by_group, pareto_frontier
from analysis.metrics import METRICS, Metric
from analysis.report import AnalysisResult, analyze
from analysis.runs import load_runs, status_summary

__all__ = [
    "METRICS",
    "AnalysisError",
    "AnalysisResult",
    "Metric",
    "analyze",
    "compare_frontiers",
    "frontiers_by_group",
    "interpolate_at",
    "load_runs",
    "pareto_frontier",
    "status_summary",
]
