"""Shared fixtures: a tiny random LM (built once per session) and helpers to run launch.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sae_sweeps_cache")


@pytest.fixture(scope="session")
def tiny_model(cache_dir: Path):
    from sae_sweeps.models.loading import load_tiny_model

    return load_tiny_model("tiny", str(cache_dir / "models"), n_layers=2, d_model=64, d_mlp=128)


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


def read_summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


@pytest.fixture
def launch(tmp_path: Path, cache_dir: Path):
    """`launch(args)` runs launch.py in a fresh directory; outputs land under tmp_path."""

    def _launch(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return run_launch(args, tmp_path, cache_dir, check)

    return _launch
