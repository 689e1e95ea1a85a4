"""Interpolation at fixed x and ratios to a baseline, on curves whose answers are known exactly."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, compare_frontiers, interpolate_at
from analysis.compare import (
    APART,
    BASELINE,
    BEST,
    WITHIN,
    comparison_blocks,
    comparison_footer,
    distinction_column,
    ratio_column,
    round_x_values,
    se_column,
    value_column,
)


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


def frontier_table_with_se(curves: dict[tuple[str, str], tuple[list[float], list[float], list[float]]]) -> pd.DataFrame:
    table = frontier_table({key: (xs, ys) for key, (xs, ys, _) in curves.items()})
    table["ce_loss_increase_se"] = [se for _, _, ses in curves.values() for se in ses]
    return table


def test_the_standard_error_is_interpolated_like_the_value():
    frontiers = frontier_table_with_se({("topk", "local"): ([10.0, 100.0], [1.0, 0.5], [0.02, 0.04])})
    row = compare_frontiers(frontiers, at=[10.0, math.sqrt(1000.0), 200.0]).iloc[0]
    assert row[se_column("l0", "ce_loss_increase", 10.0)] == pytest.approx(0.02)  # a measured point: its own SE
    assert row[se_column("l0", "ce_loss_increase", math.sqrt(1000.0))] == pytest.approx(0.03)  # halfway in log10
    assert np.isnan(row[se_column("l0", "ce_loss_increase", 200.0)])


def test_values_within_two_standard_errors_of_the_best_are_not_distinguishable():
    # At l0=10: best 1.0 +- 0.02; 1.05 +- 0.02 is 1.77 SE of the difference away, 1.10 +- 0.02 is 3.5 away.
    xs = [10.0, 100.0]
    frontiers = frontier_table_with_se({
        ("topk", "local"): (xs, [1.0, 0.5], [0.02, 0.02]),
        ("relu", "local"): (xs, [1.05, 0.6], [0.02, 0.02]),
        ("relu", "e2e"): (xs, [1.10, 0.55], [0.02, 0.02]),
    })
    table = compare_frontiers(frontiers, at=[10.0, 100.0]).set_index("group")
    at_10, at_100 = distinction_column("l0", BEST, 10.0), distinction_column("l0", BEST, 100.0)
    assert table[at_10].to_dict() == {
        "sae_arch=topk, loss=local": BEST, "sae_arch=relu, loss=local": WITHIN, "sae_arch=relu, loss=e2e": APART,
    }
    assert table[at_100].to_dict() == {
        "sae_arch=topk, loss=local": BEST, "sae_arch=relu, loss=local": APART, "sae_arch=relu, loss=e2e": WITHIN,
    }


def test_with_a_baseline_the_rule_compares_each_group_with_its_baseline():
    xs = [10.0, 100.0]
    frontiers = frontier_table_with_se({
        ("topk", "local"): (xs, [1.0, 0.5], [0.05, 0.05]),
        ("topk", "e2e"): (xs, [0.9, 0.2], [0.05, 0.05]),  # 0.1 apart: 1.4 SE; 0.3 apart: 4.2 SE
    })
    table = compare_frontiers(frontiers, at=[10.0, 100.0], baseline="loss=local").set_index("group")
    e2e = table.loc["sae_arch=topk, loss=e2e"]
    assert (e2e[distinction_column("l0", BASELINE, 10.0)], e2e[distinction_column("l0", BASELINE, 100.0)]) == (WITHIN, APART)
    assert table.loc["sae_arch=topk, loss=local", distinction_column("l0", BASELINE, 10.0)] == BASELINE


def test_frontiers_without_standard_errors_compare_as_before_with_no_verdicts():
    xs = [10.0, 100.0]
    frontiers = frontier_table({("topk", "local"): (xs, [1.0, 0.5]), ("relu", "local"): (xs, [1.05, 0.6])})
    table = compare_frontiers(frontiers, at=[10.0]).set_index("group")
    assert table.loc["sae_arch=relu, loss=local", value_column("l0", "ce_loss_increase", 10.0)] == 1.05
    assert np.isnan(table.loc["sae_arch=relu, loss=local", se_column("l0", "ce_loss_increase", 10.0)])
    assert table[distinction_column("l0", BEST, 10.0)].fillna("unknown").tolist() == [BEST, "unknown"]


def test_displayed_values_read_value_plus_minus_se_with_their_mark():
    xs = [10.0, 100.0]
    frontiers = frontier_table_with_se({
        ("topk", "local"): (xs, [1.0, 0.5], [0.02, 0.02]), ("relu", "local"): (xs, [1.05, 0.6], [0.02, 0.02]),
    })
    comparison = compare_frontiers(frontiers, at=[10.0])
    [(caption, table)] = comparison_blocks(comparison, "l0", "ce_loss_increase", [10.0])
    assert caption == "tiny h: ce_loss_increase at l0 ="
    assert table.set_index("group")["10"].to_dict() == {
        "sae_arch=relu, loss=local": "1.05 ± 0.02 ~", "sae_arch=topk, loss=local": "1 ± 0.02 *",
    }
    footer = comparison_footer(comparison, "l0", "ce_loss_increase", [10.0])
    assert any(line.startswith("~: within 2 SE of the best group's value") for line in footer)
    assert any("interpolated like the value" in line for line in footer)


def test_a_comparison_with_every_value_out_of_range_blames_the_range_not_the_standard_errors():
    """Property: when no frontier reaches the requested x, the footer says n/a means out of range and does
    not claim the runs lack standard errors (they have them; there is just no value to carry one)."""
    xs = [10.0, 100.0]
    frontiers = frontier_table_with_se({
        ("topk", "local"): (xs, [1.0, 0.5], [0.02, 0.02]), ("relu", "local"): (xs, [1.05, 0.6], [0.02, 0.02]),
    })
    comparison = compare_frontiers(frontiers, at=[1000.0])
    footer = comparison_footer(comparison, "l0", "ce_loss_increase", [1000.0])
    assert not any("predate standard errors" in line for line in footer)
    assert any(line.startswith("n/a: l0 outside the range") for line in footer)
