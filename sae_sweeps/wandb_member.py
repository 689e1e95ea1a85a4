"""Ending a sweep member's wandb run from launch.py, whether the member finished or failed. Light:
Lightning is imported only when a member that failed before its run existed needs one of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sae_sweeps.run_directory import one_line_error


def finish_member_run(cfg: Any, run_dir: Path, error: BaseException | None = None, record_failure: bool = False) -> None:
    """End this member's wandb run: "failed" with the one-line error in its summary, else finished.

    With `record_failure`, a member that failed before its run existed (a config error, a model
    that would not load) gets a failed run of its own, so a sweep's dashboard shows every member.
    """
    wandb = sys.modules.get("wandb")
    run = wandb.run if wandb is not None else None
    if run is None and error is not None and record_failure and cfg.get("logger") is not None:
        run = _run_for_failed_member(cfg, run_dir)
    if run is None:
        return
    if error is not None:
        run.summary.update({"status": "failed", "error": one_line_error(error)})
    run.finish(exit_code=1 if error is not None else 0)


def _run_for_failed_member(cfg: Any, run_dir: Path) -> Any:
    import hydra.utils
    from omegaconf import OmegaConf

    try:
        run_config = OmegaConf.to_container(cfg, resolve=True)
        name = f"{cfg.sae_arch.name}-{cfg.loss.name}-{cfg.hook.name}"
    except Exception:  # the config itself may be what failed: record the failure all the same
        run_config, name = {"sweep_id": cfg.get("sweep_id")}, "failed"
    logger = hydra.utils.instantiate(
        cfg.logger, save_dir=str(run_dir), run_name=name, run_config=run_config, _recursive_=False, _convert_="all"
    )
    return logger.experiment
