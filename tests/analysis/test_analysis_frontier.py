"""Pareto frontier extraction on hand-made points."""

import math

import pandas as pd
import pytest

from analysis import AnalysisError, pareto_frontier


def points(*xy: tuple[float, float], y: str = "ce_loss_increase") -> pd.DataFrame:
    return pd.DataFrame({"l0": [p[0] for p in xy], y: [p[1] for p in xy], "run": [str(i) for i in range(len(xy))]})


def frontier_xy(frontier: pd.DataFrame, y: str = "ce_loss_increase") -> list[tuple[float, float]]:
    return list(zip(frontier["l0"], frontier[y]))


def test_dominated_points_are_excluded_and_frontier_is_sorted_by_x():
    frontier = pareto_frontier(points((100, 0.1), (10, 0.5), (50, 0.4), (30, 0.2), (20, 0.6)))
    # (50, 0.4) loses to (30, 0.2); (20, 0.6) loses to (10, 0.5).
    assert frontier_xy(frontier) == [(10, 0.5), (30, 0.2), (100, 0.1)]


def test_identical_points_keep_exactly_one():
    frontier = pareto_frontier(points((10, 0.5), (10, 0.5), (20, 0.3)))
    assert frontier_xy(frontier) == [(10, 0.5), (20, 0.3)]
    assert frontier["run"].tolist() == ["0", "2"]  # the first of the duplicates


def test_equal_x_keeps_the_better_y():
    assert frontier_xy(pareto_frontier(points((10, 0.5), (10, 0.3), (20, 0.2)))) == [(10, 0.3), (20, 0.2)]


def test_equal_y_keeps_the_smaller_x():
    assert frontier_xy(pareto_frontier(points((10, 0.5), (20, 0.5)))) == [(10, 0.5)]


def test_a_single_point_is_its_own_frontier():
    assert frontier_xy(pareto_frontier(points((42, 0.7)))) == [(42, 0.7)]


def test_ce_loss_recovered_is_higher_is_better():
    data = points((10, 0.80), (20, 0.95), (30, 0.90), (40, 0.99), y="ce_loss_recovered")
    frontier = pareto_frontier(data, "l0", "ce_loss_recovered")
    assert frontier_xy(frontier, "ce_loss_recovered") == [(10, 0.80), (20, 0.95), (40, 0.99)]


def test_rows_missing_x_or_y_are_ignored():
    assert frontier_xy(pareto_frontier(points((10, math.nan), (math.nan, 0.1), (20, 0.3)))) == [(20, 0.3)]


def test_unknown_metric_error_lists_the_valid_metrics():
    with pytest.raises(AnalysisError, match=r"unknown metric 'l1'.*valid metrics: l0, fvu"):
        pareto_frontier(points((10, 0.5)), x="l1")
