"""The Hydra callback that leaves a finished sweep's frontier plot in its directory."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.hydra_callback import AnalyzeSweepCallback

REPO_ROOT = Path(__file__).resolve().parents[2]
FIGURE = "frontier_tiny_blocks.1.hook_resid_pre.png"


def sweep_config(sweep_dir: Path):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_writes_the_figure_into_the_sweep_directory(sweep_dir: Path, capsys):
    AnalyzeSweepCallback(baseline="loss=local").on_multirun_end(sweep_config(sweep_dir))
    assert (sweep_dir / "analysis" / FIGURE).stat().st_size > 1024
    out = capsys.readouterr().out
    assert "sweep analysis (16 completed, 1 failed, 1 unfinished) written to" in out
    assert not (sweep_dir / "analysis" / "wandb").exists()  # no wandb logger, no sweep-level run


def test_callback_prints_one_line_per_member_with_status_metrics_and_errors(sweep_dir: Path, capsys):
    AnalyzeSweepCallback().on_multirun_end(sweep_config(sweep_dir))
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:5] == ["run", "sae_arch", "loss", "sparsity_value", "status"] and "ce_loss_increase" in header
    members = {line.split()[0]: line.split() for line in lines[1:19]}
    assert members["0"][:5] == ["0", "topk", "local", "10", "completed"]
    assert members["16"][4] == "failed" and members["17"][4] == "unfinished"
    assert "16 failed: RuntimeError: CUDA out of memory" in lines


def test_with_the_wandb_logger_the_sweep_logs_one_sweep_level_run_in_its_group(sweep_dir: Path, capsys, monkeypatch):
    import wandb
    from wandb_records import offline_runs

    # A wandb-core service already running from elsewhere (a parent's WANDB_SERVICE, an earlier
    # run of this process) must not take the relative sweep directory as relative to its own cwd.
    wandb.init(mode="offline", dir=str(sweep_dir.parent), project="p").finish()
    monkeypatch.chdir(sweep_dir.parent)
    config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": sweep_dir.name}},
            "logger": {"_target_": "sae_sweeps.run_logging.wandb_logger", "project": "p", "entity": None, "mode": "offline"},
        }
    )
    AnalyzeSweepCallback(baseline="loss=local").on_multirun_end(config)
    assert "sweep analysis logged to wandb (sweep-analysis sweep-1)" in capsys.readouterr().out
    (run,) = offline_runs(sweep_dir / "analysis" / "wandb")
    assert (run.job_type, run.group, run.exit_code) == ("sweep-analysis", "sweep-1", 0)
    assert run.summary["completed"] == 16 and run.summary["failed"] == 1
    files = run.directory / "files"
    for name, rows in (("frontier", 12), ("runs", 18), ("comparison", 4)):
        assert run.summary[f"{name}/_type"] == "table-file" and run.summary[f"{name}/nrows"] == rows
        table = json.loads((files / run.summary[f"{name}/path"]).read_text())
        assert len(table["data"]) == rows
    runs_table = json.loads((files / run.summary["runs/path"]).read_text())
    assert {"run", "status", "l0", "ce_loss_increase", "sae_arch"} <= set(runs_table["columns"])
    assert (files / run.summary[f"{FIGURE.removesuffix('.png')}/path"]).stat().st_size > 1024


def test_callback_never_raises_and_prints_a_one_line_warning(tmp_path: Path, capsys):
    AnalyzeSweepCallback().on_multirun_end(sweep_config(tmp_path / "missing"))
    AnalyzeSweepCallback(y="nope").on_multirun_end(sweep_config(tmp_path))
    AnalyzeSweepCallback().on_multirun_end(OmegaConf.create({}))  # no hydra node at all
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("warning: sweep analysis failed: ") for line in lines)
    assert lines[0].endswith("does not exist")


APP = '''
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    l0 = float(cfg.sparsity)
    increase = (1.0 if cfg.loss == "local" else 0.4) / l0 ** 0.5
    summary = {
        "status": "completed", "l0": l0, "ce_loss_increase": increase, "model": "tiny",
        "hook": "blocks.1.hook_resid_pre", "sae_arch": "topk", "loss": cfg.loss, "sparsity_value": l0,
        "config": OmegaConf.to_container(cfg),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


main()
'''

CONFIG = '''
loss: local
sparsity: 10
hydra:
  callbacks:
    analyze_sweep:
      _target_: analysis.hydra_callback.AnalyzeSweepCallback
      baseline: loss=local
'''


def test_a_real_hydra_multirun_with_the_documented_yaml_leaves_its_analysis(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(CONFIG)
    sweep_dir = tmp_path / "multirun" / "sweep"
    command = [sys.executable, "app.py", "--multirun", "loss=local,e2e", "sparsity=10,30", f"hydra.sweep.dir={sweep_dir}"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    finished = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert (sweep_dir / "analysis" / FIGURE).stat().st_size > 1024
    with (sweep_dir / "analysis" / "comparison.csv").open(newline="") as file:
        ratios = {row["group"]: float(row["ratio at l0=10"]) for row in csv.DictReader(file)}
    assert ratios == {"sae_arch=topk, loss=e2e": pytest.approx(0.4), "sae_arch=topk, loss=local": 1.0}
    assert "sweep analysis (4 completed, 0 failed, 0 unfinished) written to" in finished.stdout
