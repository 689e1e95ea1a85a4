"""Smoke tests against a real local SLURM cluster (see docs/local_slurm.md).

Start the cluster with ``bash scripts/local_slurm.sh start``; without it these tests skip.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from slurm_cluster import run_command as _run

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 25.0


def _sbatch(tmp_path: Path, *args: str) -> tuple[str, Path]:
    out = tmp_path / "job-%j.out"
    res = _run(["sbatch", "--parsable", f"--output={out}", "--time=2", *args])
    assert res.returncode == 0, f"sbatch failed: {res.stderr}"
    job_id = res.stdout.strip().split(";")[0]
    assert job_id.isdigit(), res.stdout
    return job_id, tmp_path / f"job-{job_id}.out"


def _wait_done(job_id: str, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll squeue until the job has left the queue (or is in a finished state)."""
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        res = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
        state = res.stdout.strip()
        # squeue errors out ("Invalid job id") once the job is purged; empty once it is done
        if res.returncode != 0 or state in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return
        time.sleep(0.5)
    _run(["scancel", job_id])
    pytest.fail(f"job {job_id} not done after {timeout}s (state {state})")


def _job_state(job_id: str) -> str:
    res = _run(["scontrol", "show", "job", job_id, "-o"])
    for field in res.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"  # already purged from slurmctld memory (MinJobAge)


def _read_when_present(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"job output {path} missing"
    return path.read_text()


def test_sbatch_wrap_writes_output(slurm_cluster: None, tmp_path: Path) -> None:
    job_id, out = _sbatch(tmp_path, "--wrap", "echo hello-from-slurm $SLURM_JOB_ID")
    _wait_done(job_id)
    assert _job_state(job_id) in ("COMPLETED", "UNKNOWN")
    assert f"hello-from-slurm {job_id}" in _read_when_present(out)


def test_two_task_srun(slurm_cluster: None, tmp_path: Path) -> None:
    job_id, out = _sbatch(
        tmp_path,
        "--ntasks=2",
        "--wrap",
        "srun bash -c 'echo task=$SLURM_PROCID host=$(hostname -s)'",
    )
    _wait_done(job_id)
    lines = [ln for ln in _read_when_present(out).splitlines() if ln.startswith("task=")]
    assert len(lines) == 2, lines
    assert sorted(ln.split()[0] for ln in lines) == ["task=0", "task=1"]
