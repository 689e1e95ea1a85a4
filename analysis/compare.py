"""Comparing frontiers as the end-to-end SAE paper does: y at fixed x, and each group's ratio to a baseline group."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.groups import GROUP_COLUMN, SITE_COLUMNS, GroupKeys, format_value, group_label, parse_group_keys
from analysis.metrics import get_metric
from analysis.tables import format_estimate

DISTINGUISHING_SES = 2.0
"""Two values closer than this many standard errors of their difference are not distinguishable."""
BEST, BASELINE, WITHIN, APART = "best", "baseline", f"within {DISTINGUISHING_SES:g} SE", "apart"


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
    """Per hook point and group: y interpolated at each x in `at`, its standard error interpolated the same way,
    how it stands against the reference, and with a baseline, y / the baseline's y.

    The baseline ('loss=local', or every group key for one fixed group) names, for each group, the group at the
    same hook point that has these values and the group's own values for the other keys. Without a baseline the
    reference is the best group at that x. Columns: model, hook, group, baseline (when given), and per v in `at`:
    '<y> at <x>=<v>', '<y>_se at <x>=<v>' (when y has a standard error), 'vs <reference> at <x>=<v>' (see
    `distinction`), 'ratio at <x>=<v>' (when a baseline is given).
    """
    keys = parse_group_keys(group)
    at_values = tuple(at) if at is not None else default_comparison_points(frontiers, x)
    targets = parse_baseline(baseline, keys) if baseline else {}
    for key, value in targets.items():
        available = sorted({format_value(known) for known in frontiers[key]})
        if value not in available:
            raise AnalysisError(f"baseline {key}={value} matches no group; {key} is one of {', '.join(available)}")
    y_se = get_metric(y, "y").se
    y_sign = -1.0 if get_metric(y, "y").higher_is_better else 1.0
    rows = []
    for (model, hook), site in frontiers.groupby(list(SITE_COLUMNS), dropna=False, sort=False):
        curves = {}  # a group's values as text -> (its label, its y and the y's SE at each x in at_values)
        for label, points in site.groupby(GROUP_COLUMN, sort=False):
            values = tuple(format_value(value) for value in points[list(keys)].iloc[0])
            se = points[y_se] if y_se in points else np.full(len(points), np.nan)
            # The SE is interpolated like the value: at a measured point it is that run's, between two a blend.
            y_at, se_at = interpolate_at(points[x], points[y], at_values), interpolate_at(points[x], se, at_values)
            curves[values] = (label, y_at, se_at)
        best = _best_curve(curves, y_sign)
        for values, (label, y_at, se_at) in curves.items():
            row = {"model": model, "hook": hook, "group": label}
            ratios = {}
            if targets:
                baseline_values = tuple(targets.get(key, value) for key, value in zip(keys, values))
                no_runs = np.full(len(at_values), np.nan)
                missing = (f"{group_label(keys, baseline_values)} (no runs)", no_runs, no_runs)
                row["baseline"], baseline_y, baseline_se = curves.get(baseline_values, missing)
                reference = (BASELINE, baseline_y, baseline_se, [baseline_values == values] * len(at_values))
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratios = {ratio_column(x, value): ratio for value, ratio in zip(at_values, y_at / baseline_y)}
            else:
                reference = (BEST, best[1], best[2], [name == values for name in best[0]])
            name, reference_y, reference_se, is_reference = reference
            for index, value in enumerate(at_values):
                row[value_column(x, y, value)] = y_at[index]
                if y_se:
                    row[se_column(x, y, value)] = se_at[index]
                row[distinction_column(x, name, value)] = distinction(
                    y_at[index], se_at[index], reference_y[index], reference_se[index], name, is_reference[index]
                )
            rows.append(row | ratios)
    return pd.DataFrame(rows)


def _best_curve(
    curves: dict[tuple[str, ...], tuple[str, np.ndarray, np.ndarray]], y_sign: float
) -> tuple[list[tuple[str, ...] | None], np.ndarray, np.ndarray]:
    """At each x of the curves: the best group's values (None where no curve reaches), its y and its y's SE."""
    names = list(curves)
    y_GA = np.array([curves[name][1] for name in names])
    se_GA = np.array([curves[name][2] for name in names])
    cost_GA = np.where(np.isfinite(y_GA), y_sign * y_GA, np.inf)
    best_A, columns = cost_GA.argmin(axis=0), np.arange(y_GA.shape[1])
    known_A = np.isfinite(cost_GA[best_A, columns])
    best_names = [names[best] if known else None for best, known in zip(best_A, known_A)]
    return best_names, np.where(known_A, y_GA[best_A, columns], np.nan), se_GA[best_A, columns]


def distinction(
    value: float, se: float, reference: float, reference_se: float, name: str, is_reference: bool
) -> str | None:
    """How a value stands against the reference value (the baseline's or the best group's) at the same x.

    `name` for the reference itself; WITHIN when the two differ by at most DISTINGUISHING_SES standard errors of
    their difference, sqrt(se^2 + reference_se^2), i.e. they are not distinguishable; APART otherwise; None when a
    value or a standard error is missing (runs from before standard errors, or x outside a curve).
    """
    if not (np.isfinite(value) and np.isfinite(reference)):
        return None
    if is_reference:
        return name
    if not (np.isfinite(se) and np.isfinite(reference_se)):
        return None
    return WITHIN if abs(value - reference) <= DISTINGUISHING_SES * math.hypot(se, reference_se) else APART


def value_column(x: str, y: str, at: float) -> str:
    """Name of the comparison column holding y at x = at."""
    return f"{y} at {x}={at:g}"


def se_column(x: str, y: str, at: float) -> str:
    """Name of the comparison column holding the standard error of y at x = at."""
    return f"{get_metric(y, 'y').se} at {x}={at:g}"


def distinction_column(x: str, reference: str, at: float) -> str:
    """Name of the comparison column saying how y at x = at stands against the reference (BEST or BASELINE)."""
    return f"vs {reference} at {x}={at:g}"


def ratio_column(x: str, at: float) -> str:
    """Name of the comparison column holding the ratio to the baseline at x = at."""
    return f"ratio at {x}={at:g}"


MARKS = {BEST: "*", WITHIN: "~"}
"""How a displayed value shows its `distinction` (none for APART, the baseline itself, or unknown)."""


def comparison_blocks(comparison: pd.DataFrame, x: str, y: str, at: Sequence[float]) -> list[tuple[str, pd.DataFrame]]:
    """The comparison as captioned tables of text, per hook point: y at each x as 'v ± se' with its mark, then the
    ratios to the baseline (marked the same way) when there is one."""
    has_baseline = "baseline" in comparison
    reference = BASELINE if has_baseline else BEST
    headers = [f"{value:g}" for value in at]
    blocks = []
    for (model, hook), site in comparison.groupby(list(SITE_COLUMNS), dropna=False, sort=False):
        marks = {value: site[distinction_column(x, reference, value)].map(lambda d: MARKS.get(d, "")) for value in at}
        se_of = {value: site.get(se_column(x, y, value), pd.Series(np.nan, index=site.index)) for value in at}
        values = pd.DataFrame({"group": site["group"]})
        for header, value in zip(headers, at):
            cells = zip(site[value_column(x, y, value)], se_of[value], marks[value])
            values[header] = [format_estimate(v, se, mark) for v, se, mark in cells]
        blocks.append((f"{model} {hook}: {y} at {x} =", values))
        if has_baseline:
            ratios = pd.DataFrame({"group": site["group"], "baseline": site["baseline"]})
            for header, value in zip(headers, at):
                cells = zip(site[ratio_column(x, value)], marks[value])
                ratios[header] = [format_estimate(ratio, None, mark) for ratio, mark in cells]
            blocks.append((f"ratio to baseline at {x} =", ratios))
    return blocks


def comparison_footer(comparison: pd.DataFrame, x: str, y: str, at: Sequence[float]) -> list[str]:
    """What the ±, the marks and the n/a of `comparison_blocks` mean, for these values."""
    has_baseline = "baseline" in comparison
    reference = "the baseline's value" if has_baseline else "the best group's value"
    se_columns = [se_column(x, y, value) for value in at] if get_metric(y, "y").se else []
    lines = [] if has_baseline else [f"*: the best group at that {x}"]
    if se_columns and comparison[se_columns].notna().any().any():
        lines += [
            f"±: standard error over held-out contexts; between measured points it is interpolated like the value "
            f"(linear in log10 {x})",
            f"~: within {DISTINGUISHING_SES:g} SE of {reference} at that {x}, so not distinguishable from it "
            f"(SE of the difference sqrt(se^2 + se_ref^2), runs taken as independent: every run is scored on the same "
            f"held-out contexts, so this overstates it)",
        ]
    elif not se_columns:
        lines.append(f"no ± and no ~ marks: {y} has no standard error")
    elif comparison[[value_column(x, y, value) for value in at]].notna().any().any():
        # Values without SEs; when every value is n/a there is nothing the SEs could be missing from.
        lines.append("no ± and no ~ marks: these runs' summaries predate standard errors")
    measured = [value_column(x, y, value) for value in at]
    measured += [ratio_column(x, value) for value in at] if has_baseline else []
    if comparison[measured].isna().any().any():
        lines.append(f"n/a: {x} outside the range that frontier measured (values are never extrapolated)")
    return lines
