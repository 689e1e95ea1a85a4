"""A run directory belongs to one config: relaunches with another config are refused and touch
nothing, identical ones return the finished summary, start_over=true keeps the old results aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae_sweeps import run_directory
from sae_sweeps.training.checkpointing import checkpoint_path

from launch_helpers import compose_config

SHORT = ["model=tiny", "train.tokens=2048", "train.batch_size=512", "logger=none"]


def test_the_fingerprint_changes_with_what_is_trained_and_not_with_where_it_is_logged():
    base = run_directory.config_fingerprint(compose_config(SHORT))
    assert base == run_directory.config_fingerprint(compose_config([*SHORT[:-1], "logger=wandb", "resume=true"]))
    assert base == run_directory.config_fingerprint(compose_config([*SHORT, "train.checkpoint_every_fraction=0.5"]))
    for changed in ("sae_arch=relu", "loss=e2e", "hook.layer=0", "train.seed=1", "sparsity.k=8", "data.context_size=64"):
        assert base != run_directory.config_fingerprint(compose_config([*SHORT, changed])), changed


def test_a_checkpoint_of_another_config_is_refused_and_left_alone(tmp_path):
    cfg = compose_config(SHORT)
    path = checkpoint_path(tmp_path)
    path.parent.mkdir()
    torch.save({run_directory.CHECKPOINT_FINGERPRINT_KEY: "0123456789abcdef", "global_step": 3}, path)
    before = path.read_bytes()
    with pytest.raises(run_directory.RunDirectoryConflict, match=r"checkpoints/last.ckpt: fingerprint 0123456789abcdef"):
        run_directory.claim(tmp_path, cfg, run_directory.config_fingerprint(cfg))
    assert path.read_bytes() == before
    # its own config resumes from it
    torch.save({run_directory.CHECKPOINT_FINGERPRINT_KEY: run_directory.config_fingerprint(cfg), "global_step": 3}, path)
    assert run_directory.claim(tmp_path, cfg, run_directory.config_fingerprint(cfg)) is None


def files_of(directory: Path) -> dict[str, bytes]:
    """The run's files and their bytes; not launch.log (every launch appends to it) nor the lock file
    (it names whoever holds it, and every launch takes it before looking at the directory)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in ("launch.log", ".train.lock")
    }


@pytest.mark.slow
def test_relaunching_into_a_finished_run(launch, tmp_path):
    run = tmp_path / "run"
    launch([*SHORT, f"hydra.run.dir={run}"])
    finished = files_of(run)
    assert {"summary.json", ".hydra/config.yaml", ".hydra/overrides.yaml", "sae/cfg.json"} <= finished.keys()

    # another config: one line, exit 2, nothing in the directory changes (no failure.json, .hydra/ intact)
    proc = launch(["model=tiny", "loss=e2e", "hook=resid_post", "hook.layer=1", "train.tokens=2048", "logger=none",
                   f"hydra.run.dir={run}"], check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: config error: {run} holds another config's results (summary.json: fingerprint")
    assert files_of(run) == finished

    # the same config (a requeue landing after the end, a second launch): the summary, untouched
    proc = launch([*SHORT, f"hydra.run.dir={run}"])
    assert "already finished: skipping" in proc.stdout + proc.stderr
    assert files_of(run) == finished

    # start_over=true: the old results move aside whole, the new run completes
    launch(["model=tiny", "sae_arch=relu", "train.tokens=2048", "train.batch_size=512", "logger=none", "start_over=true",
            f"hydra.run.dir={run}"])
    (aside,) = run.glob("replaced-*")
    assert files_of(aside) == finished
    assert json.loads((run / "summary.json").read_text())["sae_arch"] == "relu"
