"""Entry point: compose the config, train one SAE per job, keep going when a sweep member fails.

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

from sae_sweeps.cli_help import help_page, wants_help
from sae_sweeps.config_checks import ConfigError, check_group_choices
from sae_sweeps.run import train
from sae_sweeps.run_logging import finish_member_run, one_line_error, quiet_console, write_failure
from sae_sweeps.sweeps import add_sweep_dir

log = logging.getLogger("sae_sweeps")

HEADLINE = ("l0", "fvu", "ce_loss_increase", "ce_loss_recovered", "kl", "dead_fraction", "tokens_trained", "train_seconds")


def global_rank() -> int:
    """This process's rank in a data-parallel job (torchrun sets RANK, SLURM tasks SLURM_PROCID)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        cfg.sweep_id = hydra_cfg.sweep.dir
    quiet_console()
    try:
        summary = train(cfg, run_dir)
    except Exception as err:  # one member's failure must not take the sweep (or its results) down
        if global_rank() == 0:
            write_failure(run_dir, err)
            finish_member_run(cfg, run_dir, err, record_failure=multirun)
        message = f"config error: {err}" if isinstance(err, ConfigError) else one_line_error(err)
        if multirun:
            log.error("%s failed: %s (details in %s/failure.json)", run_dir, message, run_dir)
            return None
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    finish_member_run(cfg, run_dir)
    if not summary:
        return None  # a non-zero DDP rank: rank 0 reports
    print(f"\nrun directory: {run_dir}\n  SAE: {run_dir / 'sae'}\n  summary: {run_dir / 'summary.json'}")
    print("  " + "  ".join(f"{k}={summary[k]:.4g}" for k in HEADLINE))
    return summary["ce_loss_increase"]


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):
        print(help_page(Path(__file__).parent / "conf"))
        sys.exit(0)
    try:
        check_group_choices(sys.argv[1:], Path(__file__).parent / "conf")
        sys.argv = [sys.argv[0], *add_sweep_dir(sys.argv[1:])]
    except ConfigError as err:
        print(f"error: config error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
