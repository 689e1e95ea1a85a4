"""Pareto frontiers (L0 vs CE-loss increase, and other metric pairs) of logged SAE sweeps.

Notebook use: `runs = load_runs("multirun/2026-11-23/15-00-00")`, then `result = analyze(runs, baseline="loss=local")`.
"""

import importlib

# Where each public name lives. They load on first use: Hydra imports analysis.hydra_callback in
# every run, and pandas and matplotlib must not slow down a config error or --cfg.
_PUBLIC = {
    "METRICS": "analysis.metrics",
    "AnalysisError": "analysis.errors",
    "AnalysisResult": "analysis.report",
    "Metric": "analysis.metrics",
    "analyze": "analysis.report",
    "compare_frontiers": "analysis.compare",
    "frontiers_by_group": "analysis.frontier",
    "interpolate_at": "analysis.compare",
    "load_runs": "analysis.runs",
    "pareto_frontier": "analysis.frontier",
    "status_summary": "analysis.runs",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
