"""What a sweep logs to wandb (offline), read back from each run's transaction log, and what it
prints: one finished run per member, a sweep-level run, a console without third-party noise."""

import json
from pathlib import Path

import pytest

from launch_helpers import run_launch
from sae_sweeps.run_logging import DENSITY_HISTOGRAM, wandb_config, wandb_summary
from wandb_records import offline_runs

NOISE = (
    "GPU available", "TPU available", "litlogger", "srun", "LeafSpec", "anonymous", "Moving model to device",
    "Loading weights", "Epoch 0/", "v_num", "There is a wandb run already in progress",
)


@pytest.mark.slow
def test_a_sweep_leaves_one_finished_wandb_run_per_member_and_one_for_the_sweep(tmp_path: Path, cache_dir: Path):
    # 4 held-out contexts: evaluations, 5 per member, are most of the time on the tiny model
    args = ["-m", "model=tiny", "sparsity.k=4,16,9999", "train.tokens=5120", "train.batch_size=512", "data.eval_contexts=4"]
    proc = run_launch(args, tmp_path, cache_dir, timeout=1800)
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    assert "not logged to wandb" not in proc.stdout, proc.stdout[-3000:]
    runs = offline_runs(sweep_dir)
    members = {run.directory.parents[1].name: run for run in runs if run.job_type == "train"}
    (sweep_run,) = [run for run in runs if run.job_type == "sweep-analysis"]
    assert sorted(members) == ["0", "1", "2"]  # each member its own run, in its own directory
    sweep_id = json.loads((sweep_dir / "0" / "summary.json").read_text())["sweep_id"]
    assert {run.group for run in runs} == {sweep_id}
    assert len({run.name for run in members.values()}) == 3 and "k16" in members["1"].name

    for number in ("0", "1"):
        run, summary = members[number], json.loads((sweep_dir / number / "summary.json").read_text())
        assert run.exit_code == 0
        logged_config = {key: value for key, value in run.config.items() if key != "_wandb"}  # wandb's own
        assert logged_config == wandb_config(summary["config"])  # nested, and flat: "sparsity.k"
        assert run.config["sparsity.k"] == summary["sparsity_value"] == int(run.config["sparsity"]["k"])
        assert {key: run.summary[key] for key in wandb_summary(summary)} == wandb_summary(summary)
        assert {"model:tiny", "sae_arch:topk", "loss:local", "hook:blocks.1.hook_resid_pre"} <= set(run.tags)
        evaluations = [row for row in run.history if "eval/l0" in row]
        assert len(evaluations) == 5  # 10 steps, every 2nd, the last at the end
        tokens = [row["tokens_trained"] for row in evaluations]
        assert tokens == sorted(tokens) and tokens[-1] == summary["tokens_trained"]
        assert all(row[f"{DENSITY_HISTOGRAM}/_type"] == "histogram" for row in evaluations)
        assert evaluations[-1]["eval/ce_loss_increase"] == summary["ce_loss_increase"]
        assert all("tokens_trained" in row for row in run.history if "train/loss" in row)

    failed = members["2"]
    failure = json.loads((sweep_dir / "2" / "failure.json").read_text())
    assert failed.exit_code == 1 and failed.summary["status"] == "failed"
    assert failed.summary["error"] == failure["error"] == "ConfigError: sparsity.k=9999 is larger than the dictionary (d_sae=512)"

    assert sweep_run.exit_code == 0 and sweep_run.summary["completed"] == 2 and sweep_run.summary["failed"] == 1
    for table in ("frontier", "runs", "comparison"):
        assert sweep_run.summary[f"{table}/_type"] == "table-file"
    assert sweep_run.summary["frontier_tiny_blocks.1.hook_resid_pre/_type"] == "image-file"

    console = proc.stdout + proc.stderr
    assert not [noise for noise in NOISE if noise in console]
    assert "GPU available" in (sweep_dir / "0" / "launch.log").read_text()  # the full log keeps it
    assert "sweep analysis (2 completed, 1 failed, 0 unfinished)" in proc.stdout
    table_lines = [line.split() for line in proc.stdout.splitlines() if line.split()[:2] in (["0", "topk"], ["2", "topk"])]
    assert [line[4] for line in table_lines] == ["completed", "failed"]
