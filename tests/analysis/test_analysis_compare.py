"""Interpolation at fixed x and ratios to a baseline, on curves whose answers are known exactly."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, compare_frontiers, interpolate_at
from analysis.compare import ratio_column, round_x_values, value_column


def log_line(a: float, b: float, xs: list[float]) -> list[float]:
    """y = a + b * log10(x): straight in log10(x), so interpolation along it is exact."""
    return [a + b * math.log10(x) for x in xs]


def test_interpolation_is_linear_in_log10_x_and_exact_on_log_lines():
    xs = [3.0, 30.0, 300.0]
    at = [5.0, 10.0, 30.0, 100.0, 250.0]
    np.testing.assert_allclose(interpolate_at(xs, log_line(0.5, -0.2, xs), at), log_line(0.5, -0.2, at), rtol=1e-12)


def test_interpolation_is_nan_outside_the_curve_and_exact_at_its_ends():
    xs = [10.0, 100.0]
    result = interpolate_at(xs, [1.0, 0.0], [9.99, 10.0, 100.0, 100.01])
    assert np.isnan(result[0]) and np.isnan(result[3])
    assert result[1:3].tolist() == [1.0, 0.0]


def test_interpolation_sorts_its_input_and_handles_a_single_point():
    assert interpolate_at([100.0, 10.0], [0.0, 1.0], [np.sqrt(1000.0)])[0] == pytest.approx(0.5)
    single = interpolate_at([20.0], [0.3], [20.0, 21.0])
    assert single[0] == 0.3 and np.isnan(single[1])


def test_interpolation_rejects_duplicate_or_non_positive_x():
    with pytest.raises(AnalysisError, match="same x"):
        interpolate_at([10.0, 10.0], [1.0, 2.0], [10.0])
    with pytest.raises(AnalysisError, match="positive"):
        interpolate_at([0.0, 10.0], [1.0, 2.0], [5.0])


def frontier_table(curves: dict[tuple[str, str], tuple[list[float], list[float]]]) -> pd.DataFrame:
    rows = [
        {"model": "tiny", "hook": "h", "sae_arch": arch, "loss": loss, "group": f"sae_arch={arch}, loss={loss}", "l0": x, "ce_loss_increase": y}
        for (arch, loss), (xs, ys) in curves.items()
        for x, y in zip(xs, ys)
    ]
    return pd.DataFrame(rows)


def test_ratio_to_baseline_at_equal_other_keys_is_known_where_both_curves_exist():
    local_x = [10.0, 100.0]
    e2e_x = [20.0, 200.0]
    frontiers = frontier_table({
        ("topk", "local"): (local_x, log_line(1.0, -0.4, local_x)),
        ("topk", "e2e"): (e2e_x, [0.5 * y for y in log_line(1.0, -0.4, e2e_x)]),
        ("relu", "local"): (local_x, log_line(2.0, -0.4, local_x)),
        ("relu", "e2e"): (local_x, [0.25 * y for y in log_line(2.0, -0.4, local_x)]),
    })
    table = compare_frontiers(frontiers, at=[10.0, 50.0], baseline="loss=local").set_index("group")
    assert table.loc["sae_arch=topk, loss=e2e", "baseline"] == "sae_arch=topk, loss=local"
    assert np.isnan(table.loc["sae_arch=topk, loss=e2e", ratio_column("l0", 10.0)])  # e2e starts at 20
    assert table.loc["sae_arch=topk, loss=e2e", ratio_column("l0", 50.0)] == pytest.approx(0.5)
    assert table.loc["sae_arch=relu, loss=e2e", ratio_column("l0", 10.0)] == pytest.approx(0.25)
    assert table.loc["sae_arch=topk, loss=local", ratio_column("l0", 50.0)] == pytest.approx(1.0)
    assert table.loc["sae_arch=relu, loss=local", value_column("l0", "ce_loss_increase", 50.0)] == pytest.approx(
        2.0 - 0.4 * math.log10(50.0)
    )


def test_a_baseline_naming_every_key_is_one_fixed_group():
    xs = [10.0, 100.0]
    frontiers = frontier_table({("topk", "local"): (xs, [1.0, 0.5]), ("relu", "e2e"): (xs, [3.0, 1.5])})
    table = compare_frontiers(frontiers, at=[10.0], baseline="sae_arch=topk,loss=local").set_index("group")
    assert table["baseline"].tolist() == ["sae_arch=topk, loss=local"] * 2
    assert table.loc["sae_arch=relu, loss=e2e", ratio_column("l0", 10.0)] == pytest.approx(3.0)


def test_a_group_whose_baseline_was_not_run_gets_nan_ratios_and_says_so():
    xs = [10.0, 100.0]
    frontiers = frontier_table({("topk", "local"): (xs, [1.0, 0.5]), ("relu", "e2e"): (xs, [3.0, 1.5])})
    row = compare_frontiers(frontiers, at=[10.0], baseline="loss=local").set_index("group").loc["sae_arch=relu, loss=e2e"]
    assert row["baseline"] == "sae_arch=relu, loss=local (no runs)"
    assert np.isnan(row[ratio_column("l0", 10.0)])


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("loss", "not key=value"),
        ("seed=0", "'seed' is not a group key"),
        ("loss=locl", "loss=locl matches no group; loss is one of e2e, local"),
    ],
)
def test_bad_baselines_are_rejected_with_a_clear_message(baseline: str, message: str):
    frontiers = frontier_table({("topk", "local"): ([10.0], [1.0]), ("topk", "e2e"): ([10.0], [0.5])})
    with pytest.raises(AnalysisError, match=message):
        compare_frontiers(frontiers, at=[10.0], baseline=baseline)


def test_default_comparison_points_are_round_values_within_range():
    assert round_x_values(7.0, 120.0) == (10.0, 20.0, 50.0, 100.0)
    assert round_x_values(1.0, 1e5) == (1.0, 10.0, 100.0, 1000.0, 1e4, 1e5)  # 1-2-5 would give 16
    assert round_x_values(31.0, 33.0) == (31.0, 33.0)
