"""Surviving interruptions and failures: resume is exact, failures are recorded and contained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from sae_sweeps.launching.signals import warning_signal
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.run import train
from sae_sweeps.sweeps import add_sweep_dir, sweep_key
from sae_sweeps.training.checkpointing import checkpoint_path, resumable_checkpoint
from sae_sweeps.training.module import NonFiniteLossError

from launch_helpers import REPO, compose_config

TINY = ["model=tiny", "train.tokens=20000", "train.batch_size=512", "logger=none"]
COMPARED = ("l0", "fvu", "ce_loss_sae", "ce_loss_increase", "kl", "dead_fraction", "dense_fraction",
            "tokens_trained", "train_loss_start", "train_loss_end", "final_sparsity_coefficient")


# The second case resumes a target-L0 controller: its state (L0 average, integral) must come back from the checkpoint.
@pytest.mark.parametrize("sparsity", [[], ["sae_arch=relu", "sparsity.target_l0=16"]], ids=["topk", "relu-target-l0"])
def test_a_run_stopped_by_slurms_warning_signal_resumes_to_the_same_summary(sparsity, tmp_path, cache_dir):
    env = os.environ | {"SAE_SWEEPS_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "launch.py"), *TINY, *sparsity]
    subprocess.run([*command, f"hydra.run.dir={tmp_path / 'whole'}"], env=env, check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([*command, f"hydra.run.dir={interrupted}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not checkpoint_path(interrupted).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(warning_signal())  # what SLURM sends before a time limit (--signal=USR2@...)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "resume from" in stderr
    assert not (interrupted / "summary.json").exists() and not (interrupted / "failure.json").exists()
    _, stopped_at = resumable_checkpoint(interrupted)
    assert 0 < stopped_at < 39

    subprocess.run([*command, f"hydra.run.dir={interrupted}"], env=env, check=True, capture_output=True)
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    resumed = json.loads((interrupted / "summary.json").read_text())
    assert {k: resumed[k] for k in COMPARED} == {k: whole[k] for k in COMPARED}


def test_an_unreadable_checkpoint_is_never_resumed_from(tmp_path):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert resumable_checkpoint(tmp_path) is None


class NaNAfterStepLoss(LocalLoss):
    """The local loss, until optimiser step 12 where it turns NaN (a diverging run)."""

    calls = 0

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        NaNAfterStepLoss.calls += 1
        return out._replace(total=out.total * torch.nan) if NaNAfterStepLoss.calls > 12 else out


def test_nan_loss_stops_the_run_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir):
    cfg = compose_config([*TINY, f"paths.cache_dir={cache_dir}", "loss.module._target_=test_resume_and_failures.NaNAfterStepLoss"])
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 12"):
        train(cfg, tmp_path)
    path, step = resumable_checkpoint(tmp_path)
    assert step == 12  # checkpoints every 3 of 39 steps; the step that went NaN (index 12) left none
    state = torch.load(path, weights_only=False)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_failing_member_is_recorded_and_the_others_keep_their_results(launch, tmp_path):
    proc = launch(["-m", *TINY, "train.tokens=2048", "sparsity.k=8,100000"])
    assert proc.returncode == 0
    (sweep,) = tmp_path.glob("multirun/*/*")
    completed = json.loads((sweep / "0" / "summary.json").read_text())
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert completed["status"] == "completed" and completed["sparsity_value"] == 8
    assert failure["status"] == "failed" and failure["error"].startswith("ConfigError: sparsity.k=100000")
    assert "Traceback" in failure["traceback"]


def test_resume_true_reuses_the_sweep_directory_and_skips_finished_members(launch, tmp_path):
    sweep_args = ["-m", *TINY, "train.tokens=2048", "sparsity.k=4,8"]
    launch(sweep_args)
    (sweep,) = tmp_path.glob("multirun/*/*")
    summaries = sorted(sweep.glob("*/summary.json"))
    before = [p.stat().st_mtime_ns for p in summaries]
    (summaries[1]).unlink()  # member 1 "did not finish"
    proc = launch([*sweep_args, "resume=true"])
    assert list(tmp_path.glob("multirun/*/*")) == [sweep]
    assert summaries[0].stat().st_mtime_ns == before[0]  # finished member untouched
    assert summaries[1].exists()  # unfinished member ran again
    assert "already finished: skipping" in proc.stdout + proc.stderr


def test_sweep_key_ignores_order_launcher_and_resume_but_not_the_experiment():
    a = sweep_key(["-m", "sae_arch=relu,topk", "loss=local"])
    assert a == sweep_key(["loss=local", "-m", "sae_arch=relu,topk", "hydra/launcher=submitit_slurm", "resume=true"])
    assert a != sweep_key(["-m", "sae_arch=relu,topk", "loss=e2e"])
    assert add_sweep_dir(["model=tiny"]) == ["model=tiny"]  # single runs are left alone
    assert add_sweep_dir(["-m", "x=1"])[-1].endswith(f"-{sweep_key(['x=1'])}")
