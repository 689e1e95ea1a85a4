"""`analyze`, the notebook entry point: what its result holds and what it leaves out."""

import json
from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from analysis import AnalysisError, analyze, frontiers_by_group, load_runs


def test_analyze_without_out_returns_tables_and_figures_and_writes_nothing(sweep_dir: Path):
    result = analyze(load_runs(sweep_dir))
    assert result.files == [] and not (sweep_dir / "analysis").exists()
    assert list(result.figures) == ["tiny blocks.1.hook_resid_pre"]
    assert isinstance(result.figures["tiny blocks.1.hook_resid_pre"], Figure)
    assert result.at == (10.0, 20.0, 50.0, 100.0)  # default: the 1-2-5 values inside the frontiers' range
    assert len(result.runs) == 18 and "group" in result.runs
    assert result.warnings == []
    assert len(result.notes) == 1 and result.notes[0].startswith("every run trained on 100,000 tokens")


def test_frontiers_group_by_any_key_and_never_pool_hook_points(tmp_path: Path, make_sweep):
    make_sweep(tmp_path / "layer1", hook="blocks.1.hook_resid_pre")
    make_sweep(tmp_path / "layer2", hook="blocks.2.hook_resid_pre")
    frontiers = frontiers_by_group(load_runs(tmp_path), group="loss")
    # Per hook, loss=local pools topk and relu: only topk's 3 points survive; likewise for e2e.
    assert frontiers.groupby(["hook", "group"]).size().to_dict() == {
        ("blocks.1.hook_resid_pre", "loss=e2e"): 3,
        ("blocks.1.hook_resid_pre", "loss=local"): 3,
        ("blocks.2.hook_resid_pre", "loss=e2e"): 3,
        ("blocks.2.hook_resid_pre", "loss=local"): 3,
    }
    assert set(frontiers.loc[frontiers["group"] == "loss=local", "run"].str[-1]) == {"0", "1", "2"}


def test_other_axes_use_their_own_direction(sweep_dir: Path):
    recovered = analyze(sweep_dir, y="ce_loss_recovered").frontiers
    assert len(recovered) == 12  # the same 12 runs win: recovered falls as the increase rises
    assert recovered.groupby("group")["ce_loss_recovered"].apply(lambda ys: ys.is_monotonic_increasing).all()
    alive = analyze(sweep_dir, x="alive_latents").frontiers
    assert len(alive) == 4  # every run has 500 alive latents, so each group's best run alone remains


def test_completed_runs_without_the_axes_metrics_are_left_out_with_a_note(sweep_dir: Path):
    summary_path = sweep_dir / "0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["l0"] = None
    summary_path.write_text(json.dumps(summary))
    result = analyze(sweep_dir)
    assert result.notes[0] == (
        "1 of 16 completed runs lack a finite ce_loss_increase or a positive, finite l0 "
        "(the x axis is logarithmic) and are left off the frontiers"
    )


def test_no_completed_run_with_the_metrics_is_an_error_not_an_empty_plot(sweep_dir: Path):
    for summary_path in sweep_dir.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["kl"] = None
        summary_path.write_text(json.dumps(summary))
    with pytest.raises(AnalysisError, match="none of the 16 completed runs has a finite kl"):
        analyze(sweep_dir, y="kl")


def error_bar_containers(figure: Figure) -> list:
    return [container for container in figure.axes[0].containers if isinstance(container, ErrorbarContainer)]


def test_frontier_figures_draw_y_and_x_error_bars_when_the_runs_have_standard_errors(sweep_dir: Path):
    figure = analyze(sweep_dir).figures["tiny blocks.1.hook_resid_pre"]
    bars = error_bar_containers(figure)
    assert len(bars) == 4 and all(bar.has_yerr and bar.has_xerr for bar in bars)  # l0 and ce_loss_increase have SEs
    without_x = analyze(sweep_dir, x="alive_latents").figures["tiny blocks.1.hook_resid_pre"]
    assert all(bar.has_yerr and not bar.has_xerr for bar in error_bar_containers(without_x))  # a count: no SE


def test_runs_from_before_standard_errors_still_plot_and_compare_without_error_bars(tmp_path: Path, make_sweep):
    make_sweep(tmp_path, standard_errors=False)
    result = analyze(tmp_path)
    bars = error_bar_containers(result.figures["tiny blocks.1.hook_resid_pre"])
    assert bars and not any(bar.has_yerr or bar.has_xerr for bar in bars)
    assert result.comparison.filter(like="ce_loss_increase_se at").isna().all().all()


def test_a_group_with_a_single_frontier_point_is_warned_about(sweep_dir: Path):
    for summary_path in sweep_dir.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        if summary["sae_arch"] == "relu" and summary["loss"] == "e2e" and summary["l0"] != 10.0:
            summary_path.unlink()
    result = analyze(sweep_dir)
    assert result.warnings == [
        "tiny blocks.1.hook_resid_pre: 1 of 4 groups have a single frontier point, so their comparison values are "
        "n/a except at that l0 (run more sparsity values): sae_arch=relu, loss=e2e (l0=10)"
    ]
