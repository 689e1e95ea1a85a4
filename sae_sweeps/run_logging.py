"""wandb, where a run's results go besides its directory (offline unless asked otherwise); the
local record (summary.json, failure.json) that needs no wandb is sae_sweeps/run_directory.py."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger


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
