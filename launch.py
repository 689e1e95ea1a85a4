"""Entry point: compose the config, check it, train one SAE per job, keep going when a sweep member fails.

    python launch.py                                   # the offline default (SmolLM2, TopK, local)
    python launch.py -m sae_arch=relu,topk loss=local  # a sweep
    python launch.py --help / --cfg job                # what can be set
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sae_sweeps import run_directory
from sae_sweeps.cli_help import help_page, wants_help
from sae_sweeps.config_checks import ConfigError, check_config, check_group_choices
from sae_sweeps.launching.slurm import register_launcher_schema
from sae_sweeps.summary import HEADLINE_KEYS, SE_KEYS
from sae_sweeps.sweeps import add_sweep_dir
from sae_sweeps.training.run_lock import one_trainer_per_run_dir
from sae_sweeps.wandb_member import finish_member_run

log = logging.getLogger("sae_sweeps")


def global_rank() -> int:
    """This process's rank in a data-parallel job (torchrun sets RANK, SLURM tasks SLURM_PROCID)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def headline_value(summary: dict, key: str) -> str:
    """`key=value`, with `±se` where the metric has a standard error."""
    se = f"±{summary[SE_KEYS[key]]:.2g}" if key in SE_KEYS else ""
    return f"{key}={summary[key]:.4g}{se}"


@one_trainer_per_run_dir
def claim_and_train(cfg: DictConfig, run_dir: Path) -> dict:
    """The run directory's finished summary, or a new one trained there once the directory is this config's."""
    summary = run_directory.claim(run_dir, cfg, run_directory.config_fingerprint(cfg))
    if summary is not None:
        log.info("%s already finished: skipping", run_dir)
        return summary
    if global_rank() == 0:
        run_directory.save_hydra_record(run_dir, cfg, HydraConfig.get())
    from sae_sweeps.console import quiet_console
    from sae_sweeps.run import train  # torch, Lightning, the LM: only once the checks pass

    quiet_console()
    return train(cfg, run_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        cfg.sweep_id = hydra_cfg.sweep.dir
    try:
        check_config(cfg)  # before anything heavy is imported or loaded
        summary = claim_and_train(cfg, run_dir)
    except Exception as err:  # one member's failure must not take the sweep (or its results) down
        # A refused directory belongs to another run: nothing is written into it.
        if global_rank() == 0 and not isinstance(err, run_directory.RunDirectoryConflict):
            run_directory.save_hydra_record(run_dir, cfg, hydra_cfg)  # so that the analysis lists the failed member
            run_directory.write_failure(run_dir, err)
            finish_member_run(cfg, run_dir, err, record_failure=multirun)
        message = f"config error: {err}" if isinstance(err, ConfigError) else run_directory.one_line_error(err)
        if multirun:
            log.error("%s failed: %s (details in %s/failure.json)", run_dir, message, run_dir)
            return None
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    finish_member_run(cfg, run_dir)
    if not summary:
        return None  # a non-zero DDP rank: rank 0 reports
    print(f"\nrun directory: {run_dir}\n  SAE: {run_dir / 'sae'}\n  summary: {run_dir / 'summary.json'}")
    print("  " + "  ".join(headline_value(summary, key) for key in HEADLINE_KEYS))
    return summary["ce_loss_increase"]


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):
        print(help_page(Path(__file__).parent / "conf"))
        sys.exit(0)
    register_launcher_schema()
    try:
        check_group_choices(sys.argv[1:], Path(__file__).parent / "conf")
        sys.argv = [sys.argv[0], *add_sweep_dir(sys.argv[1:])]
    except ConfigError as err:
        print(f"error: config error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
