"""Members that hit their time limit or die mid-run on the real local SLURM cluster: nothing is
redone beyond the step in flight, the sweep command always returns, and resume=true finishes the
run to the summary of an uninterrupted twin."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from launch_helpers import REPO, run_launch
from slow_loss import STARTED_FILE_ENV
from slurm_cluster import run_command

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4"]
# 600 steps of at least 0.2 s each (slow_loss.py): still training when the test acts, on any
# machine; no periodic checkpoints, so a resume can only start from the signal's.
RUN = ["model=tiny", "logger=none", "trainer=cpu", "sae_arch=relu", "train.batch_size=128", "train.tokens=76800",
       "train.eval_every_fraction=0", "train.checkpoint_every_fraction=0"]
SLOW = "loss.module._target_=slow_loss.SlowLocalLoss"
T = TypeVar("T")
COMPARED = ("l0", "fvu", "ce_loss_sae", "ce_loss_increase", "kl", "dead_fraction", "dense_fraction",
            "tokens_trained", "train_loss_start", "train_loss_end")


@pytest.fixture
def jobs_import_slow_loss(monkeypatch):
    """SLURM jobs inherit the submitting environment: let them import slow_loss from here."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))


@pytest.fixture
def sweeps(tmp_path):
    """Starts `launch.py` sweeps; at the end, cancels whatever jobs they left (a failed test)."""
    started = []

    def start(args: list[str], cache: Path) -> subprocess.Popen:
        env = os.environ | {"SAE_SWEEPS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job_ids = {d.name.split("_")[0] for d in tmp_path.glob("multirun/*/*/.submitit/*") if d.name[0].isdigit()}
    if job_ids:
        run_command(["scancel", *sorted(job_ids)])


def wait_for(found: Callable[[], T | None], proc: subprocess.Popen, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        result = found()
        if result:
            return result
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{what} did not happen within {timeout:.0f} s:\n{proc.communicate()[0][-3000:]}")


def compared(summary_path: Path) -> dict:
    summary = json.loads(summary_path.read_text())
    return {k: summary[k] for k in COMPARED}


def elapsed_s(job_id: str) -> int:
    """How long the job has run, from squeue's [[d-]h:]mm:ss."""
    text = run_command(["squeue", "-h", "-j", job_id, "-o", "%M"]).stdout.strip()
    seconds = 0
    for part in text.replace("-", ":").split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def set_time_limit(job_id: str, minutes: int) -> None:
    res = run_command(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"])
    assert res.returncode == 0, res.stderr


def test_a_member_whose_time_limit_falls_mid_run_checkpoints_at_the_signal_and_matches_its_twin(
        slurm_cluster, jobs_import_slow_loss, sweeps, tmp_path, cache_dir, monkeypatch):
    started = tmp_path / "training-started"
    monkeypatch.setenv(STARTED_FILE_ENV, str(started))
    sweep = sweeps(["-m", *SLURM, "hydra.launcher.timeout_min=20", "hydra.launcher.signal_delay_s=30", *RUN, SLOW], cache_dir)
    twin = sweeps([*RUN, f"hydra.run.dir={tmp_path / 'twin'}"], cache_dir)  # meanwhile, uninterrupted, here
    wait_for(started.exists, sweep, 900, "training")
    job_id = wait_for(lambda: [d.name for d in tmp_path.glob("multirun/*/*/.submitit/*") if d.name.isdigit()],
                      sweep, 60, "the job's submitit folder")[0]
    # The limit now falls 45-105 s ahead, mid-run (>= 120 s of steps); SLURM checks every 30 s and
    # warns once less than signal_delay_s + 30 s are left: within 75 s.
    set_time_limit(job_id, math.ceil((elapsed_s(job_id) + 45) / 60))
    member = next(tmp_path.glob("multirun/*/*/0"))
    signal_line = r"checkpointed step (\d+) at signal SIGUSR2"
    wait_for(lambda: re.search(signal_line, (member / "launch.log").read_text()), sweep, 300, "the time-limit signal")
    set_time_limit(job_id, 20)  # the requeued job may finish in its next allocation
    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-3000:]
    twin_output, _ = twin.communicate(timeout=900)
    assert twin.returncode == 0, twin_output[-3000:]

    log = (member / "launch.log").read_text()
    (signalled,) = re.findall(signal_line, log)
    (resumed,) = re.findall(r"resuming \S+ from step (\d+)", log)
    assert resumed == signalled  # nothing redone: the next allocation starts at the step after the signal
    assert compared(member / "summary.json") == compared(tmp_path / "twin" / "summary.json")


def test_a_sigkilled_member_is_reported_lost_and_resume_true_finishes_it_like_its_twin(
        slurm_cluster, jobs_import_slow_loss, sweeps, tmp_path, cache_dir):
    args = ["-m", *SLURM, "hydra.launcher.timeout_min=20", "hydra.launcher.lost_after_s=10", "hydra.launcher.poll_s=2",
            *RUN, "train.tokens=38400", "train.checkpoint_every_fraction=0.1", SLOW, "+replica=0,1"]  # 300 steps
    sweep = sweeps(args, cache_dir)
    checkpoint = wait_for(lambda: next(tmp_path.glob("multirun/*/*/1/checkpoints/last.ckpt"), None), sweep, 900,
                          "a checkpoint of member 1")
    member = checkpoint.parents[1]
    pid = int(re.match(r"pid (\d+) on host", (member / ".train.lock").read_text()).group(1))
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would: no handler runs, no result is written
    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-3000:]
    assert re.search(rf"member 1 \(.*\+replica=1\) lost: its SLURM job \d+_1 ended \(FAILED\) without a result; "
                     rf"its last checkpoint is {re.escape(str(checkpoint.relative_to(tmp_path)))}", output), output[-3000:]
    assert "sweep analysis (1 completed, 0 failed, 1 unfinished)" in output
    assert not (member / "summary.json").exists()

    run_launch([*args, "resume=true"], tmp_path, cache_dir)
    assert "resuming" in (member / "launch.log").read_text()
    assert compared(member / "summary.json") == compared(member.parent / "0" / "summary.json")
