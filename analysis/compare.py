"""Comparing frontiers as the end-to-end SAE paper does: y at fixed x, and each group's ratio to a baseline group."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.groups import GROUP_COLUMN, SITE_COLUMNS, GroupKeys, format_value, group_label, parse_group_keys


def interpolate_at(xs: Sequence[float], ys: Sequence[float], at: Sequence[float]) -> np.ndarray:
    """y at each x in `at`, linear in log10(x) between neighbouring points of a curve; NaN outside its x range."""
    x_array, y_array, at_array = (np.asarray(values, dtype="float64") for values in (xs, ys, at))
    if x_array.shape != y_array.shape or x_array.ndim != 1:
        raise AnalysisError("xs and ys must be one-dimensional and of equal length")
    if np.any(x_array <= 0) or np.any(at_array <= 0):
        raise AnalysisError("interpolation in log10(x) needs every x to be positive")
    if x_array.size == 0:
        return np.full(at_array.shape, np.nan)
    order = np.argsort(x_array)
    if np.any(np.diff(x_array[order]) == 0):
        raise AnalysisError("a curve cannot have two points at the same x; interpolate along a frontier")
    # Never extrapolate: beyond the measured range nothing says how the frontier bends.
    return np.interp(np.log10(at_array), np.log10(x_array[order]), y_array[order], left=np.nan, right=np.nan)


def round_x_values(low: float, high: float, max_count: int = 8) -> tuple[float, ...]:
    """The 1-2-5 values within [low, high]; only the powers of ten if there are more than max_count; else the ends."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    candidates = [(mantissa, mantissa * 10.0**decade) for decade in decades for mantissa in (1, 2, 5)]
    values = [(mantissa, value) for mantissa, value in candidates if low <= value <= high]
    if len(values) > max_count:
        values = [(mantissa, value) for mantissa, value in values if mantissa == 1]
    return tuple(value for _, value in values) or tuple(dict.fromkeys((low, high)))


def default_comparison_points(frontiers: pd.DataFrame, x: str) -> tuple[float, ...]:
    """Round x values spanning all the frontiers together."""
    return round_x_values(frontiers[x].min(), frontiers[x].max())


def parse_baseline(baseline: str, keys: Sequence[str]) -> dict[str, str]:
    """{key: value} from 'loss=local' or 'sae_arch=relu,loss=local'; every key must be a group key."""
    targets = {}
    for part in baseline.split(","):
        key, separator, value = (text.strip() for text in part.partition("="))
        if not (separator and key and value):
            raise AnalysisError(f"baseline {baseline!r} is not key=value[,key=value], e.g. loss=local")
        if key not in keys:
            raise AnalysisError(f"baseline key {key!r} is not a group key (group keys: {', '.join(keys)})")
        targets[key] = value
    return targets


def compare_frontiers(
    frontiers: pd.DataFrame,
    x: str = "l0",
    y: str = "ce_loss_increase",
    group: GroupKeys = "sae_arch,loss",
    at: Sequence[float] | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Per hook point and group: y interpolated at each x in `at`, and with a baseline, y / the baseline's y.

    The baseline ('loss=local', or every group key for one fixed group) names, for each group, the group at the
    same hook point that has these values and the group's own values for the other keys. Columns: model, hook,
    group, baseline (when given), '<y> at <x>=<v>' per v, 'ratio at <x>=<v>' per v (when a baseline is given).
    """
    keys = parse_group_keys(group)
    at_values = tuple(at) if at is not None else default_comparison_points(frontiers, x)
    targets = parse_baseline(baseline, keys) if baseline else {}
    for key, value in targets.items():
        available = sorted({format_value(known) for known in frontiers[key]})
        if value not in available:
            raise AnalysisError(f"baseline {key}={value} matches no group; {key} is one of {', '.join(available)}")
    rows = []
    for (model, hook), site in frontiers.groupby(list(SITE_COLUMNS), dropna=False, sort=False):
        curves = {}  # a group's values as text -> (its label, its y at each x in at_values)
        for label, points in site.groupby(GROUP_COLUMN, sort=False):
            values = tuple(format_value(value) for value in points[list(keys)].iloc[0])
            curves[values] = (label, interpolate_at(points[x], points[y], at_values))
        for values, (label, y_at) in curves.items():
            row = {"model": model, "hook": hook, "group": label}
            ratios = {}
            if targets:
                baseline_values = tuple(targets.get(key, value) for key, value in zip(keys, values))
                missing = (f"{group_label(keys, baseline_values)} (no runs)", np.full(len(at_values), np.nan))
                row["baseline"], baseline_y = curves.get(baseline_values, missing)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratios = {ratio_column(x, value): ratio for value, ratio in zip(at_values, y_at / baseline_y)}
            row |= {value_column(x, y, value): y_value for value, y_value in zip(at_values, y_at)}
            rows.append(row | ratios)
    return pd.DataFrame(rows)


def value_column(x: str, y: str, at: float) -> str:
    """Name of the comparison column holding y at x = at."""
    return f"{y} at {x}={at:g}"


def ratio_column(x: str, at: float) -> str:
    """Name of the comparison column holding the ratio to the baseline at x = at."""
    return f"ratio at {x}={at:g}"
