"""Sweeps submitted to the real local SLURM cluster through hydra-submitit-launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_helpers import REPO, run_launch
from slurm_cluster import run_command

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM = ["hydra/launcher=submitit_slurm", "trainer=cpu", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=20", "logger=none"]
TINY = ["model=tiny", "train.batch_size=512"]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def only_sweep(root: Path) -> Path:
    (sweep,) = root.glob("multirun/*/*")
    return sweep


def test_a_2x2_architecture_by_loss_sweep_completes_on_slurm(slurm_cluster, tmp_path, cache_dir):
    run_launch(["-m", *SLURM, *TINY, "train.tokens=4096", "sae_arch=relu,topk", "loss=local,e2e"], tmp_path, cache_dir)
    done = summaries(only_sweep(tmp_path))
    assert sorted((s["sae_arch"], s["loss"]) for s in done.values()) == [
        ("relu", "e2e"), ("relu", "local"), ("topk", "e2e"), ("topk", "local")]
    for summary in done.values():
        assert summary["status"] == "completed" and summary["tokens_trained"] > 0
        for key in ("l0", "fvu", "ce_loss_increase", "ce_loss_recovered", "kl", "dead_fraction", "train_seconds"):
            assert isinstance(summary[key], float), key
    assert len({s["sweep_id"] for s in done.values()}) == 1


def test_a_member_requeued_mid_training_resumes_and_matches_an_uninterrupted_member(slurm_cluster, tmp_path, cache_dir):
    # Two identical members; member 1 is requeued by SLURM once it has a checkpoint.
    args = ["-m", *SLURM, *TINY, "sae_arch=relu", "train.tokens=150000",
            "train.checkpoint_every_fraction=0.05", "+replica=0,1"]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=os.environ | {"SAE_SWEEPS_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 300
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("multirun/*/*/1/checkpoints/last.ckpt"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.5)
    assert checkpoint is not None, "member 1 never wrote a checkpoint"
    sweep = checkpoint.parents[2]
    (job_dir,) = [p for p in (sweep / ".submitit").iterdir() if p.name.endswith("_1")]
    requeue = run_command(["scontrol", "requeue", job_dir.name])
    assert requeue.returncode == 0, requeue.stderr
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]

    assert "resuming" in (sweep / "1" / "launch.log").read_text()
    done = summaries(sweep)
    keys = ("l0", "fvu", "ce_loss_sae", "kl", "dead_fraction", "tokens_trained", "train_loss_start", "train_loss_end")
    assert {k: done["1"][k] for k in keys} == {k: done["0"][k] for k in keys}


def test_a_failing_member_is_recorded_and_the_other_finishes_on_slurm(slurm_cluster, tmp_path, cache_dir):
    run_launch(["-m", *SLURM, *TINY, "train.tokens=2048", "sparsity.k=8,100000"], tmp_path, cache_dir)
    sweep = only_sweep(tmp_path)
    assert summaries(sweep)["0"]["status"] == "completed"
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["error"].startswith("ConfigError: sparsity.k=100000")


def test_a_two_task_ddp_job_through_slurm_matches_one_process(slurm_cluster, tmp_path, cache_dir):
    common = [*TINY, "train.tokens=20000", "sae_arch=relu", "logger=none", "trainer=cpu"]
    run_launch([*common, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path, cache_dir)
    run_launch(["-m", *SLURM, *common, "trainer.devices=2", "trainer.strategy=ddp"], tmp_path, cache_dir)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    (two,) = summaries(only_sweep(tmp_path)).values()
    assert two["tokens_trained"] == one["tokens_trained"]
    for key in ("l0", "fvu", "ce_loss_sae", "kl", "dead_fraction", "train_loss_start", "train_loss_end"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
