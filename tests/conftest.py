"""Shared fixtures: a tiny random LM (built once per session) and a `launch` runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch_helpers import run_launch


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sae_sweeps_cache")


@pytest.fixture(scope="session")
def tiny_model(cache_dir: Path):
    from sae_sweeps.models.loading import load_tiny_model

    return load_tiny_model("tiny", str(cache_dir / "models"), n_layers=2, d_model=64, d_mlp=128)


@pytest.fixture
def launch(tmp_path: Path, cache_dir: Path):
    """`launch(args)` runs launch.py in a fresh directory; outputs land under tmp_path."""

    def _launch(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return run_launch(args, tmp_path, cache_dir, check)

    return _launch
