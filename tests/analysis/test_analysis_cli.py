"""`python -m analysis` end to end on fake sweep directories, and its one-line errors on bad input."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import default_out_dir, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE = "frontier_tiny_blocks.1.hook_resid_pre"
REPO_ROOT = Path(__file__).resolve().parents[2]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_cli_writes_figures_and_tables_listing_every_run(sweep_dir: Path, capsys: pytest.CaptureFixture):
    assert main([str(sweep_dir), "--baseline", "loss=local", "--at", "10,20,50"]) == 0
    out_dir = sweep_dir / "analysis"
    png = (out_dir / f"{FIGURE}.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1024
    assert (out_dir / f"{FIGURE}.svg").read_text().lstrip().startswith("<?xml")
    runs = read_csv(out_dir / "runs.csv")
    assert len(runs) == 18
    assert sorted(row["status"] for row in runs).count("completed") == 16
    assert {row["run"]: row["error"] for row in runs if row["status"] == "failed"} == {"16": "RuntimeError: CUDA out of memory"}
    assert len(read_csv(out_dir / "frontier.csv")) == 12  # 4 groups x 3 points; the dominated runs are off
    assert (out_dir / "frontier.md").read_text().startswith("| model | hook |")
    comparison = {row["group"]: row for row in read_csv(out_dir / "comparison.csv")}
    assert float(comparison["sae_arch=topk, loss=e2e"]["ratio at l0=20"]) == pytest.approx(0.4)
    printed = capsys.readouterr().out
    assert "runs: 16 completed, 1 failed, 1 unfinished" in printed
    assert "failed: 16 (sae_arch=topk, loss=e2e): RuntimeError: CUDA out of memory" in printed
    assert f"wrote 7 files to {out_dir.resolve()}" in printed
    assert "ratio to baseline at l0 =" in printed


def test_mixed_hook_points_give_one_figure_each_and_a_note(tmp_path: Path, make_sweep, capsys: pytest.CaptureFixture):
    make_sweep(tmp_path / "sweeps" / "layer1", hook="blocks.1.hook_resid_pre")
    make_sweep(tmp_path / "sweeps" / "layer2", hook="blocks.2.hook_resid_pre")
    assert main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "report")]) == 0
    assert sorted(path.name for path in (tmp_path / "report").glob("*.png")) == [
        "frontier_tiny_blocks.1.hook_resid_pre.png",
        "frontier_tiny_blocks.2.hook_resid_pre.png",
    ]
    assert "note: runs cover 2 hook points" in capsys.readouterr().out


def test_html_is_written_when_plotly_is_installed(sweep_dir: Path, tmp_path: Path):
    pytest.importorskip("plotly")
    assert main([str(sweep_dir), "--out", str(tmp_path / "report"), "--html"]) == 0
    assert "plotly" in (tmp_path / "report" / f"{FIGURE}.html").read_text()


def test_html_without_plotly_is_skipped_with_a_note(sweep_dir: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None if name == "plotly" else object())
    assert main([str(sweep_dir), "--out", str(tmp_path / "report"), "--html"]) == 0
    assert not list((tmp_path / "report").glob("*.html"))
    assert "note: plotly is not installed" in capsys.readouterr().out


def all_failed_sweep(root: Path, make_run) -> Path:
    make_run(root / "0", {"a": 1}, failure={"status": "failed", "error": "OSError: disk full", "traceback": ""})
    make_run(root / "1", {"a": 1})
    return root


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{empty}"], "no runs found under"),
        (["{all_failed}"], r"no completed runs among 2 (0 completed, 1 failed, 1 unfinished); first failure: 0: OSError: disk full"),
        (["{sweep}", "--y", "ce_los"], "unknown metric 'ce_los' for y; valid metrics: l0, "),
        (["{sweep}", "--x", "sparsity"], "unknown metric 'sparsity' for x"),
        (["{sweep}", "--group", "sae_arch,optimizer.lr"], "unknown group key 'optimizer.lr'"),
        (["{sweep}", "--at", "10,abc"], "--at takes comma-separated numbers, got '10,abc'"),
        (["{sweep}", "--at", "0,10"], "comparison x values must be positive, got 0, 10"),
        (["{sweep}", "--baseline", "loss=global"], "baseline loss=global matches no group"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, sweep_dir: Path, make_run, capsys: pytest.CaptureFixture, arguments: list[str], message: str
):
    (tmp_path / "empty").mkdir()
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "all_failed": all_failed_sweep(tmp_path / "failed_sweep", make_run),
        "sweep": sweep_dir,
    }
    out_dir = tmp_path / "report"
    assert main([argument.format(**places) for argument in arguments] + ["--out", str(out_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not out_dir.exists()


def test_python_dash_m_runs_the_cli_and_exits_2_without_traceback(tmp_path: Path):
    bad = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nope")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert (bad.returncode, bad.stderr) == (2, f"error: {tmp_path / 'nope'} does not exist\n")


def test_default_output_directory_is_inside_the_first_sweep_or_analysis_out_for_wandb():
    assert default_out_dir("multirun/2026-11-23/15-00-00") == Path("multirun/2026-11-23/15-00-00/analysis")
    assert default_out_dir("wandb:team/saes") == Path("analysis_out")


def test_the_printed_comparison_shows_plus_minus_and_states_the_two_se_rule(sweep_dir: Path, capsys):
    assert main([str(sweep_dir), "--at", "10,20"]) == 0
    printed = capsys.readouterr().out
    assert "0.1265 ± 0.01 *" in printed  # topk e2e at l0=10: 0.4 / sqrt(10), the best group there
    assert "~: within 2 SE of the best group's value at that l0, so not distinguishable from it" in printed
    assert "± 0.01" in (sweep_dir / "analysis" / "comparison.md").read_text()
    assert read_csv(sweep_dir / "analysis" / "frontier.csv")[0]["ce_loss_increase_se"] == "0.01"


def test_runs_without_standard_errors_print_plain_values_and_say_why(tmp_path: Path, make_sweep, capsys):
    make_sweep(tmp_path, standard_errors=False)
    assert main([str(tmp_path), "--at", "10"]) == 0
    printed = capsys.readouterr().out
    assert " ± " not in printed.split("no ± and")[0] and "0.1265 *" in printed
    assert "no ± and no ~ marks: these runs' summaries predate standard errors" in printed


def test_the_cli_prints_the_single_point_warning(sweep_dir: Path, capsys):
    assert main([str(sweep_dir), "--group", "sae_arch,loss,sparsity_value"]) == 0
    assert "warning: tiny blocks.1.hook_resid_pre: 16 of 16 groups have a single frontier point" in capsys.readouterr().out


def test_html_figures_carry_the_error_bars(sweep_dir: Path, tmp_path: Path):
    pytest.importorskip("plotly")
    assert main([str(sweep_dir), "--out", str(tmp_path / "report"), "--html"]) == 0
    assert '"error_y":{"array":[0.01,0.01,0.01]' in (tmp_path / "report" / f"{FIGURE}.html").read_text()
