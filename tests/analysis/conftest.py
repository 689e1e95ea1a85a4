"""Fake sweep directories laid out the way the trainer and Hydra write them."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sae_sweeps.summary import SE_KEYS

HOOK = "blocks.1.hook_resid_pre"
# CE loss increase = SCALE / sqrt(L0) per group, so e2e beats local by a known factor at every L0.
SCALE = {("topk", "local"): 1.0, ("topk", "e2e"): 0.4, ("relu", "local"): 1.5, ("relu", "e2e"): 0.6}
FRONTIER_L0 = (10.0, 30.0, 100.0)
DOMINATED_L0 = 50.0  # given the CE increase of L0=10, so every frontier point beats it


def run_config(sae_arch: str, loss: str, sparsity: float, hook: str = HOOK, context_size: int = 128) -> dict[str, Any]:
    """A resolved config shaped like the project's (model, hook, sae_arch, loss, sparsity, data, train groups)."""
    return {
        "model": {"name": "tiny", "d_model": 64},
        "hook": {"name": hook, "layer": int(hook.split(".")[1])},
        "sae_arch": {"name": sae_arch, "expansion": 8},
        "loss": {"name": loss},
        "sparsity": {"coefficient": sparsity},
        "data": {"context_size": context_size, "layers": [1, 2]},
        "train": {"tokens": 100_000, "seed": 0},
    }


STANDARD_ERROR = 0.01  # of every metric that has one, so any two frontier values 0.03 apart are distinguishable


def run_summary(
    sae_arch: str, loss: str, l0: float, ce_loss_increase: float, hook: str = HOOK, standard_errors: bool = True
) -> dict[str, Any]:
    """A completed run's summary.json with every flat key the trainer writes; without `standard_errors`, as
    summaries were before they carried `<name>_se`."""
    config = run_config(sae_arch, loss, l0, hook)
    errors = {key: STANDARD_ERROR for key in SE_KEYS.values()} if standard_errors else {}
    return errors | {
        "status": "completed",
        "l0": l0, "fvu": 0.1, "explained_variance": 0.9, "ce_loss_clean": 3.0, "ce_loss_sae": 3.0 + ce_loss_increase,
        "ce_loss_zero_ablation": 6.0, "ce_loss_increase": ce_loss_increase,
        "ce_loss_recovered": (3.0 - ce_loss_increase) / 3.0, "kl": ce_loss_increase * 0.9, "dead_fraction": 0.01,
        "dense_fraction": 0.0, "alive_latents": 500, "tokens_trained": 100_000, "train_seconds": 12.5,
        "dead_window_tokens": 10_000, "eval_tokens": 4096, "model": "tiny", "hook": hook, "hook_layer": int(hook.split(".")[1]),
        "sae_arch": sae_arch, "loss": loss, "sparsity_knob": "coefficient", "sparsity_value": l0, "sparsity_coefficient": 0.0,
        "k": int(l0) if sae_arch == "topk" else None, "d_in": 64, "d_sae": 512, "seed": 0, "sweep_id": "sweep-1",
        "run_dir": "/elsewhere/run", "feature_density_histogram": {"log10_bin_edges": [-8, -4, 0], "counts": [3, 5]},
        "config": config,
    }


def write_run(run_dir: Path, config: dict[str, Any], summary: dict | None = None, failure: dict | None = None) -> Path:
    """A run directory: .hydra/config.yaml and overrides.yaml, plus summary.json / failure.json when given."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"{group}={config[group]['name']}" for group in ("sae_arch", "loss") if group in config]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if failure is not None:
        (run_dir / "failure.json").write_text(json.dumps(failure))
    return run_dir


def write_sweep(sweep_dir: Path, hook: str = HOOK, standard_errors: bool = True) -> dict[str, str]:
    """A sweep of 4 groups x 4 completed runs, 1 failed and 1 unfinished run; returns run name -> status."""
    statuses = {}
    index = 0
    for (sae_arch, loss), scale in SCALE.items():
        curve = [(l0, scale / math.sqrt(l0)) for l0 in FRONTIER_L0]
        for l0, ce_increase in [*curve, (DOMINATED_L0, curve[0][1])]:
            summary = run_summary(sae_arch, loss, l0, ce_increase, hook, standard_errors)
            write_run(sweep_dir / str(index), run_config(sae_arch, loss, l0, hook), summary)
            statuses[str(index)] = "completed"
            index += 1
    failure = {"status": "failed", "error": "RuntimeError: CUDA out of memory", "traceback": "Traceback...\nboom"}
    unresolved = run_config("topk", "e2e", 999.0, hook)  # as Hydra saves it: interpolations left in
    unresolved["hook"]["name"] = hook.replace(f".{unresolved['hook']['layer']}.", ".${hook.layer}.")
    write_run(sweep_dir / str(index), unresolved, failure=failure)
    statuses[str(index)] = "failed"
    write_run(sweep_dir / str(index + 1), run_config("relu", "e2e", 0.5, hook))
    statuses[str(index + 1)] = "unfinished"
    return statuses


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A Hydra multirun directory holding the standard fake sweep (16 completed, 1 failed, 1 unfinished)."""
    directory = tmp_path / "multirun" / "2026-11-23" / "15-00-00"
    write_sweep(directory)
    return directory


@pytest.fixture
def make_sweep() -> Callable[..., dict[str, str]]:
    """`write_sweep`, for tests that lay out their own directories."""
    return write_sweep


@pytest.fixture
def make_run() -> Callable[..., Path]:
    """`write_run`, for tests that lay out their own runs."""
    return write_run
