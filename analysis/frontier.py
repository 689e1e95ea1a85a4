"""Pareto frontiers: the runs that no other run beats on both axes."""

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.groups import GROUP_COLUMN, SITE_COLUMNS, GroupKeys, group_keys_for, with_group_columns
from analysis.metrics import absence_reasons, get_metric
from analysis.runs import completed_runs

FRONTIER_EXTRA_COLUMNS = ("sparsity_value", "run", "location")


def plottable_runs(runs: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The completed runs with a finite y and a finite x > 0 (the x axis is logarithmic)."""
    get_metric(x, "x")  # an unknown metric fails here, naming the valid ones
    get_metric(y, "y")
    completed = completed_runs(runs)
    x_values, y_values = completed[x].astype("float64"), completed[y].astype("float64")
    usable = completed[np.isfinite(x_values) & np.isfinite(y_values) & (x_values > 0)]
    if usable.empty:
        raise AnalysisError(
            f"none of the {len(completed)} completed runs has a finite {y} and a positive, finite {x}{absence_reasons(x, y)}"
        )
    return usable


def pareto_frontier(points: pd.DataFrame, x: str = "l0", y: str = "ce_loss_increase") -> pd.DataFrame:
    """The rows of `points` that no other row beats on both x and y, sorted by x; each metric's direction is known.

    Of identical points one is kept; of points with equal x, the one with the better y. Rows with a missing x
    or y are ignored.
    """
    x_sign = -1.0 if get_metric(x, "x").higher_is_better else 1.0
    y_sign = -1.0 if get_metric(y, "y").higher_is_better else 1.0
    candidates = points[np.isfinite(points[x].astype("float64")) & np.isfinite(points[y].astype("float64"))]
    # As costs both axes are "lower is better", so one sweep in order of x cost serves every direction.
    x_cost = x_sign * candidates[x].to_numpy(dtype="float64")
    y_cost = y_sign * candidates[y].to_numpy(dtype="float64")
    best_y_cost = np.inf
    kept = []
    for position in np.lexsort((y_cost, x_cost)):  # by x cost, then y cost; stable, so the first duplicate stays
        if y_cost[position] < best_y_cost:
            kept.append(position)
            best_y_cost = y_cost[position]
    return candidates.iloc[kept].sort_values(x, kind="stable").reset_index(drop=True)


def frontiers_by_group(
    runs: pd.DataFrame, x: str = "l0", y: str = "ce_loss_increase", group: GroupKeys = "sae_arch,loss"
) -> pd.DataFrame:
    """The frontier points of each (model, hook point, group) of completed runs, one row per point.

    Columns: model, hook, the group keys, 'group' (the group's label), x, y, the standard error `<metric>_se` after
    each axis metric that has one (NaN for runs written before standard errors existed), sparsity_value, run,
    location.
    """
    keys = group_keys_for(runs, group)
    points = with_group_columns(plottable_runs(runs, x, y), keys)
    axes = [column for metric in (x, y) for column in (metric, get_metric(metric, "axis").se) if column]
    columns = list(dict.fromkeys((*SITE_COLUMNS, *keys, GROUP_COLUMN, *axes, *FRONTIER_EXTRA_COLUMNS)))
    frontiers = [
        pareto_frontier(group_points, x, y)[columns]
        for _, group_points in points.groupby([*SITE_COLUMNS, GROUP_COLUMN], dropna=False, sort=False)
    ]
    # Sorting on the raw group values puts k=8 before k=16, which sorting labels would not.
    order = list(dict.fromkeys((*SITE_COLUMNS, *keys, x)))
    return pd.concat(frontiers, ignore_index=True).sort_values(order, kind="stable", ignore_index=True)
