"""Whether a comparison is made at a budget where the runs have stopped improving.

At a short budget every penalty architecture is still far from converged, so a frontier there ranks
how fast recipes converge, not how good they end up (docs/results.md#budget-curves). The runs say
so only when the same setting was trained at more than one budget: the criterion below reads the
last doubling of tokens. With a single budget nothing can be told, and the analysis says that.
"""

import math

import numpy as np
import pandas as pd

from analysis.groups import GROUP_COLUMN, SITE_COLUMNS, format_value, site_label
from analysis.metrics import get_metric

BUDGET_COLUMN = "tokens_trained"
FLAT_CHANGE_PER_DOUBLING = 0.05
"""A curve has flattened when y moved by at most this fraction per doubling of tokens between its two
largest budgets, or by no more than two standard errors of the difference."""


def relative_change_per_doubling(y_small: float, y_large: float, tokens_small: float, tokens_large: float) -> float:
    """|y_large - y_small| / |y_small|, per doubling of training tokens from tokens_small to tokens_large."""
    doublings = math.log2(tokens_large / tokens_small)
    return abs(y_large - y_small) / max(abs(y_small), 1e-12) / doublings


def sparsity_settings(runs: pd.DataFrame) -> pd.Series:
    """'<knob>=<value>' per run (what set its L0: the same setting at several budgets is one curve)."""
    knobs = runs["sparsity_knob"] if "sparsity_knob" in runs else pd.Series("sparsity", index=runs.index)
    return pd.Series([f"{knob}={format_value(value)}" for knob, value in zip(knobs, runs["sparsity_value"])], index=runs.index)


def unflattened_curves(points: pd.DataFrame, y: str) -> list[str]:
    """'<group> at <knob>=<value>: <y> moved N% per doubling from A to B tokens' for every (hook point, group,
    sparsity setting) trained at two or more budgets whose last doubling fails the flatness criterion."""
    se = get_metric(y, "y").se
    found = []
    curves = points.assign(setting=sparsity_settings(points))
    for (model, hook, label, setting), curve in curves.groupby([*SITE_COLUMNS, GROUP_COLUMN, "setting"], sort=False):
        by_budget = curve.groupby(BUDGET_COLUMN)[[y, se] if se else [y]].mean().sort_index()
        if len(by_budget) < 2:
            continue
        (tokens_small, small), (tokens_large, large) = list(by_budget.iloc[-2:].iterrows())
        change = relative_change_per_doubling(small[y], large[y], tokens_small, tokens_large)
        difference_se = math.hypot(small[se], large[se]) if se else math.nan
        within_noise = np.isfinite(difference_se) and abs(large[y] - small[y]) <= 2 * difference_se
        if change > FLAT_CHANGE_PER_DOUBLING and not within_noise:
            found.append(
                f"{site_label(model, hook)} {label} at {setting}: {y} moved {change:.0%} per "
                f"doubling from {tokens_small:,.0f} to {tokens_large:,.0f} tokens"
            )
    return found


def budget_messages(points: pd.DataFrame, y: str) -> tuple[list[str], list[str]]:
    """(notes, warnings) on the training budgets of the plotted runs: a note when they share one budget (so
    whether the curves have flattened is unknown), a warning naming every curve still moving at its largest."""
    budgets = points[BUDGET_COLUMN].dropna().unique()
    if len(budgets) == 1:
        note = (
            f"every run trained on {budgets[0]:,.0f} tokens: whether {y} still improves with more tokens "
            "is unknown, and at a short budget a comparison ranks convergence speed (rerun the sweep at 2x and 4x "
            "train.tokens: the analysis then checks the last doubling)"
        )
        return [note], []
    moving = unflattened_curves(points, y)
    if not moving:
        return [], []
    warning = (
        f"{len(moving)} curves have not flattened at their largest budget (criterion: {y} changes by more than "
        f"{FLAT_CHANGE_PER_DOUBLING:.0%} per doubling of tokens, and by more than 2 SE): " + "; ".join(moving)
    )
    return [], [warning]
