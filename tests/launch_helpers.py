"""Composing configs and running launch.py as a user would, from tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sae_sweeps.summary import CHOICE_KEYS, METRIC_KEYS, OPTIONAL_METRIC_KEYS, SUMMARY_VERSION

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The config launch.py would compose for these overrides (no model or data is loaded)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def run_launch(args: list[str], cwd: Path, cache: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python launch.py ARGS` as a user would, offline, with wandb offline."""
    env = os.environ | {"SAE_SWEEPS_CACHE": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_SERVICE", None)  # a user's shell has none: not this test process's wandb-core
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_complete(summary: dict, optional_present: bool = True) -> None:
    """Every field of the summary contract is there, and every measured number is finite; the optional
    measurements (sparse probing, which needs labelled data) are all there when `optional_present`, else all None."""
    missing = (set(CHOICE_KEYS) | set(METRIC_KEYS)) - summary.keys()
    assert not missing, f"summary lacks {missing}"
    assert summary["summary_version"] == SUMMARY_VERSION
    for key in METRIC_KEYS:
        if key in OPTIONAL_METRIC_KEYS and not optional_present:
            assert summary[key] is None, key
        else:
            assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
