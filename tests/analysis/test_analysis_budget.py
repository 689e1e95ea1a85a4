"""The budget check: whether the compared curves still improve at their largest training budget."""

import json
from pathlib import Path

import pytest

from analysis import analyze
from analysis.budget import FLAT_CHANGE_PER_DOUBLING, relative_change_per_doubling

from conftest import run_config, run_summary, write_run


def test_relative_change_per_doubling_on_known_numbers():
    """Property: 1.0 -> 0.8 over 100k -> 400k tokens is a 20% change over two doublings: 10% per doubling."""
    assert relative_change_per_doubling(1.0, 0.8, 100_000, 400_000) == pytest.approx(0.1)
    assert relative_change_per_doubling(2.0, 2.0, 100_000, 200_000) == 0.0


def write_budget_sweep(sweep_dir: Path, ce_increase_by_tokens: dict[str, dict[int, float]], se: float = 0.001) -> None:
    """Per architecture, one run per (budget, L0 in 10 and 30) with CE increase scaled by 10 / L0."""
    index = 0
    for sae_arch, by_tokens in ce_increase_by_tokens.items():
        for tokens, ce_increase in by_tokens.items():
            for l0 in (10.0, 30.0):
                summary = run_summary(sae_arch, "local", l0, ce_increase * 10 / l0)
                summary |= {"tokens_trained": tokens, "ce_loss_increase_se": se}
                write_run(sweep_dir / str(index), run_config(sae_arch, "local", l0), summary)
                index += 1


def test_a_curve_still_improving_at_its_largest_budget_is_warned_about_and_a_flat_one_is_not(tmp_path: Path):
    """Property: topk moves 1% per doubling between its two largest budgets (flat), relu 25% (not flat):
    the warning names relu at each of its settings and not topk."""
    write_budget_sweep(tmp_path, {
        "topk": {100_000: 1.5, 200_000: 1.0, 400_000: 0.99},
        "relu": {100_000: 4.0, 200_000: 2.0, 400_000: 1.5},
    })
    result = analyze(tmp_path)
    budget_warnings = [warning for warning in result.warnings if "not flattened" in warning]
    assert len(budget_warnings) == 1
    assert "2 curves" in budget_warnings[0] and f"{FLAT_CHANGE_PER_DOUBLING:.0%} per doubling" in budget_warnings[0]
    assert "sae_arch=relu, loss=local at coefficient=10: ce_loss_increase moved 25% per doubling from 200,000 to 400,000 tokens" in budget_warnings[0]
    assert "sae_arch=relu, loss=local at coefficient=30" in budget_warnings[0]
    assert "topk" not in budget_warnings[0]


def test_a_change_within_two_standard_errors_counts_as_flat(tmp_path: Path):
    """Property: a 20% change per doubling is no evidence of improvement when it is within 2 SE of the difference."""
    write_budget_sweep(tmp_path, {"relu": {100_000: 1.0, 200_000: 0.8}}, se=0.5)
    assert not [warning for warning in analyze(tmp_path).warnings if "not flattened" in warning]


def test_runs_at_a_single_budget_get_a_note_that_flatness_is_unknown(sweep_dir: Path):
    result = analyze(sweep_dir)
    assert result.notes == [
        "every run trained on 100,000 tokens: whether ce_loss_increase still improves with more tokens is unknown, "
        "and at a short budget a comparison ranks convergence speed (rerun the sweep at 2x and 4x train.tokens: "
        "the analysis then checks the last doubling)"
    ]
