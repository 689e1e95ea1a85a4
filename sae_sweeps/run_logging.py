"""Where a run's results go: wandb (offline unless asked otherwise) and a local record
(summary.json, failure.json) that needs no wandb at all."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from sae_sweeps.summary import FAILURE_FILENAME



def wandb_logger(
    project: str,
    mode: str,
    save_dir: str,
    run_name: str,
    run_config: dict[str, Any],
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
) -> Logger:
    """A Lightning WandbLogger; `mode` is online, offline (the default: `wandb sync` later) or disabled."""
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=run_name,
        tags=list(tags or []),
        save_dir=save_dir,
        mode=mode,
        config=run_config,
    )


def log_summary_to_wandb(loggers: list[Logger], summary: dict[str, Any]) -> None:
    """Put the final metrics in the wandb run summary under exactly the summary.json names."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
            logger.experiment.summary.update(scalars)


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
