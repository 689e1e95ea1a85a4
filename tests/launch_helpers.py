"""Running launch.py as a user would, from tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_launch(args: list[str], cwd: Path, cache: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python launch.py ARGS` as a user would, offline, with wandb offline."""
    env = os.environ | {"SAE_SWEEPS_CACHE": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


SUMMARY_KEYS = {
    "l0", "fvu", "ce_loss_clean", "ce_loss_sae", "ce_loss_zero_ablation", "ce_loss_increase",
    "ce_loss_recovered", "kl", "dead_fraction", "dense_fraction", "tokens_trained", "train_seconds",
    "model", "hook", "sae_arch", "loss", "sparsity_value",
}


def assert_complete(summary: dict) -> None:
    missing = SUMMARY_KEYS - summary.keys()
    assert not missing, f"summary lacks {missing}"
    for key in SUMMARY_KEYS - {"model", "hook", "sae_arch", "loss"}:
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
