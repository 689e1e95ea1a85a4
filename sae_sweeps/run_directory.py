"""A run's directory: the config it belongs to, and the records it keeps (summary.json, failure.json).

Everything that changes a run's result is hashed into its config fingerprint, stored in its
checkpoints and its summary. A job that finds a finished summary with its own fingerprint (a
requeue landing after the end, `resume=true`) returns that summary; one that finds results of a
different config stops with one line and touches nothing, unless `start_over=true`, which moves
those results aside (never deletes them) and starts fresh.

Hydra's own `.hydra/` files are written here, after that check (`hydra.output_subdir` is null),
so that a refused relaunch cannot overwrite the record of the run that owns the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sae_sweeps.config_checks import ConfigError
from sae_sweeps.summary import COMPLETED, FAILURE_FILENAME, SUMMARY_FILENAME

RESULT_NEUTRAL_KEYS = (
    "resume", "start_over", "sweep_id", "paths", "logger",
    "train.eval_every_fraction", "train.checkpoint_every_fraction", "data.periodic_eval_contexts",
    "data.eval_cache",
)
"""Config keys that do not change what a run computes (where it logs, how often it checkpoints)."""
CHECKPOINT_FINGERPRINT_KEY = "config_fingerprint"
CHECKPOINT_DIRNAME = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RESULT_ENTRIES = (SUMMARY_FILENAME, FAILURE_FILENAME, "checkpoints", "sae")
"""What a run leaves in its directory; `start_over` moves these aside together."""
HYDRA_DIRNAME = ".hydra"


class RunDirectoryConflict(ConfigError):
    """The run directory holds results of a different config."""


def config_fingerprint(cfg: DictConfig) -> str:
    """16 hex digits of a hash of the resolved config, less RESULT_NEUTRAL_KEYS."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    for dotted in RESULT_NEUTRAL_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def claim(run_dir: Path, cfg: DictConfig, fingerprint: str) -> dict[str, Any] | None:
    """Make `run_dir` this config's: its finished summary if it already has one, else None.

    Raises RunDirectoryConflict (and changes nothing) when the directory holds another config's
    summary or checkpoint, unless `start_over=true`.
    """
    summary = _read_json(run_dir / SUMMARY_FILENAME)
    owners = {
        SUMMARY_FILENAME: summary.get("config_fingerprint", "an unrecorded config") if summary else None,
        "checkpoints/last.ckpt": checkpoint_fingerprint(run_dir),
    }
    foreign = {where: owner for where, owner in owners.items() if owner is not None and owner != fingerprint}
    if foreign and cfg.get("start_over"):
        moved_to = move_results_aside(run_dir)
        print(f"start_over=true: moved the earlier results of {run_dir} to {moved_to}")
        return None
    if foreign:
        where, owner = next(iter(foreign.items()))
        raise RunDirectoryConflict(
            f"{run_dir} holds another config's results ({where}: fingerprint {owner}, this run {fingerprint}); "
            "use a new hydra.run.dir, or start_over=true to move them aside"
        )
    return summary if summary.get("status") == COMPLETED else None


def checkpoint_path(run_dir: Path) -> Path:
    """The run's last checkpoint (sae_sweeps/training/checkpointing.py writes it)."""
    return run_dir / CHECKPOINT_DIRNAME / LAST_CHECKPOINT


def checkpoint_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint stored in the run's last checkpoint ("an unrecorded config" if it has none)."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # unreadable: never resumed from (checkpointing.resumable_checkpoint), so it owns nothing
        return None
    return state.get(CHECKPOINT_FINGERPRINT_KEY, "an unrecorded config")


def move_results_aside(run_dir: Path) -> Path:
    """Move the run's results into `run_dir/replaced-<time>/`, keeping them."""
    target = run_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
    target.mkdir()
    for name in (*RESULT_ENTRIES, HYDRA_DIRNAME):
        if (run_dir / name).exists():
            (run_dir / name).rename(target / name)
    return target


def save_hydra_record(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """What Hydra writes to `.hydra/` (config, hydra config, overrides), written once the directory is ours."""
    record = run_dir / HYDRA_DIRNAME
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), record / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, record / "overrides.yaml")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """A reader never sees half a file: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def one_line_error(error: BaseException) -> str:
    """The root cause in one line: wrappers such as Hydra's InstantiationException hide it."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def write_failure(run_dir: Path, error: BaseException) -> Path:
    """Record why a run failed, beside whatever it had already saved."""
    path = run_dir / FAILURE_FILENAME
    write_json_atomically(
        path,
        {
            "status": "failed",
            "error": one_line_error(error),
            "traceback": "".join(traceback.format_exception(error)),
        },
    )
    return path
