"""Helpers for tests against the real local SLURM cluster that `.ci/run` starts
(`bash scripts/local_slurm.sh start`); without a cluster these tests skip, saying so."""

from __future__ import annotations

import shutil
import subprocess

import pytest

SKIP_REASON = "no SLURM: run bash scripts/local_slurm.sh start"


def run_command(args: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def cluster_usable() -> bool:
    if any(shutil.which(tool) is None for tool in ("sinfo", "sbatch", "squeue", "scontrol")):
        return False
    try:
        # `scontrol ping` fails at once when slurmctld is down; sinfo would retry for ~10 s
        ping = run_command(["scontrol", "ping"], timeout=10)
        if "is UP" not in ping.stdout:
            return False
        res = run_command(["sinfo", "-h", "-o", "%T"], timeout=10)
    except (subprocess.TimeoutExpired, OSError):
        return False
    states = {line.strip().rstrip("*~#!%$@+^-") for line in res.stdout.splitlines()}
    return res.returncode == 0 and bool(states & {"idle", "mixed", "allocated", "completing"})
