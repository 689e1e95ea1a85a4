"""Members that hit their time limit or die mid-run on the real local SLURM cluster: nothing is
redone beyond the step in flight, the sweep command always returns, and resume=true finishes the
run to the summary of an uninterrupted twin."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_helpers import REPO, run_launch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4"]
# 500 steps of at least 0.2 s (slow_loss.py): longer than the first allocation of a 2-minute job
# on any machine; no periodic checkpoints, so a resume can only start from the signal's.
RUN = ["model=tiny", "logger=none", "trainer=cpu", "sae_arch=relu", "train.batch_size=128", "train.tokens=64000",
       "train.eval_every_fraction=0", "train.checkpoint_every_fraction=0"]
SLOW = "loss.module._target_=slow_loss.SlowLocalLoss"
COMPARED = ("l0", "fvu", "ce_loss_sae", "ce_loss_increase", "kl", "dead_fraction", "dense_fraction",
            "tokens_trained", "train_loss_start", "train_loss_end")


@pytest.fixture
def jobs_import_slow_loss(monkeypatch):
    """SLURM jobs inherit the submitting environment: let them import slow_loss from here."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))


def start_launch(args: list[str], cwd: Path, cache: Path) -> subprocess.Popen:
    env = os.environ | {"SAE_SWEEPS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(paths: callable, proc: subprocess.Popen, timeout: float, what: str) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = paths()
        if found:
            return found[0]
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{what} did not happen within {timeout:.0f} s:\n{proc.communicate()[0][-3000:]}")


def compared(summary_path: Path) -> dict:
    summary = json.loads(summary_path.read_text())
    return {k: summary[k] for k in COMPARED}


def test_a_member_whose_time_limit_falls_mid_run_checkpoints_at_the_signal_and_matches_its_twin(
        slurm_cluster, jobs_import_slow_loss, tmp_path, cache_dir):
    # SLURM sends the warning 30-60 s before a 2-minute limit: 60-90 s into each allocation.
    sweep = start_launch(["-m", *SLURM, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                          *RUN, SLOW], tmp_path, cache_dir)
    run_launch([*RUN, f"hydra.run.dir={tmp_path / 'twin'}"], tmp_path, cache_dir)  # meanwhile, uninterrupted
    output, _ = sweep.communicate(timeout=1200)
    assert sweep.returncode == 0, output[-3000:]
    (member,) = tmp_path.glob("multirun/*/*/0")
    log = (member / "launch.log").read_text()
    signalled = [int(s) for s in re.findall(r"checkpointed step (\d+) at signal SIGUSR2", log)]
    resumed = [int(s) for s in re.findall(r"resuming \S+ from step (\d+)", log)]
    assert signalled, f"no checkpoint at the time-limit signal:\n{log}"
    # each allocation cut short resumes exactly where the signal stopped the previous one
    for step in signalled:
        later = log[log.index(f"checkpointed step {step} at signal"):]
        assert re.search(r"resuming \S+ from step (\d+)", later).group(1) == str(step), log
    assert set(signalled) <= set(resumed)
    assert compared(member / "summary.json") == compared(tmp_path / "twin" / "summary.json")


def test_a_sigkilled_member_is_reported_lost_and_resume_true_finishes_it_like_its_twin(
        slurm_cluster, jobs_import_slow_loss, tmp_path, cache_dir):
    args = ["-m", *SLURM, "hydra.launcher.timeout_min=20", "hydra.launcher.lost_after_s=10", "hydra.launcher.poll_s=2",
            *RUN, "train.tokens=38400", "train.checkpoint_every_fraction=0.1", SLOW, "+replica=0,1"]
    sweep = start_launch(args, tmp_path, cache_dir)
    checkpoint = wait_for(lambda: list(tmp_path.glob("multirun/*/*/1/checkpoints/last.ckpt")), sweep, 900,
                          "a checkpoint of member 1")
    member = checkpoint.parents[1]
    pid = int(re.match(r"pid (\d+) on host", (member / ".train.lock").read_text()).group(1))
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would: no handler runs, no result is written
    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-3000:]
    assert re.search(rf"member 1 \(.*\+replica=1\) lost: its SLURM job \d+_1 ended \(FAILED\) without a result; "
                     rf"its last checkpoint is {re.escape(str(checkpoint))}", output), output[-3000:]
    assert "sweep analysis (1 completed, 0 failed, 1 unfinished)" in output
    assert not (member / "summary.json").exists()

    run_launch([*args, "resume=true"], tmp_path, cache_dir)
    assert "resuming" in (member / "launch.log").read_text()
    assert compared(member / "summary.json") == compared(member.parent / "0" / "summary.json")
