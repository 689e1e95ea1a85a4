"""What a finished sweep prints (a table of its members) and logs to wandb (one sweep-level run)."""

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.report import AnalysisResult
from analysis.schema import CONFIG_COLUMN, FAILED
from analysis.tables import text_table
from analysis.wandb_source import SWEEP_ANALYSIS_JOB_TYPE

WANDB_LOGGER_TARGET = "sae_sweeps.run_logging.wandb_logger"
MEMBER_COLUMNS = ("run", "sae_arch", "loss", "sparsity_value", "status", "l0", "ce_loss_increase", "fvu", "dead_fraction")
MAX_MEMBERS_SHOWN = 20
ERROR_WIDTH = 100


def members_table(runs: pd.DataFrame) -> str:
    """The sweep's members, one line each: their choices, status and headline metrics; errors below."""
    members = runs[[column for column in MEMBER_COLUMNS if column in runs]].head(MAX_MEMBERS_SHOWN)
    lines = [text_table(members)]
    if len(runs) > MAX_MEMBERS_SHOWN:
        lines.append(f"... and {len(runs) - MAX_MEMBERS_SHOWN} more (see runs.csv)")
    failed = runs[runs["status"] == FAILED]
    lines += [f"{run} failed: {str(error)[:ERROR_WIDTH]}" for run, error in zip(failed["run"], failed["error"])]
    return "\n".join(lines)


def wandb_settings(config: DictConfig) -> dict[str, Any] | None:
    """project, entity and mode of the sweep's wandb logger, or None when it logs elsewhere."""
    logger = config.get("logger")
    if logger is None or logger.get("_target_") != WANDB_LOGGER_TARGET:
        return None
    return {key: OmegaConf.select(logger, key) for key in ("project", "entity", "mode")}


def log_sweep_to_wandb(config: DictConfig, result: AnalysisResult, out: Path) -> str | None:
    """One run in the sweep's group (job_type "sweep-analysis"): the frontier points, every run
    and the comparison as wandb Tables, and each frontier figure. Returns the run's name, or None
    when the sweep does not log to wandb."""
    settings = wandb_settings(config)
    if settings is None:
        return None
    import wandb  # slow to import, and only this path needs it

    group = sweep_group(result.runs, str(config.hydra.sweep.dir))
    name = f"{SWEEP_ANALYSIS_JOB_TYPE} {Path(group).name}"
    run = wandb.init(
        # Absolute: a wandb-core service started by another process (WANDB_SERVICE) resolves a
        # relative directory against its own working directory, and the run's log lands there.
        **settings, group=group, job_type=SWEEP_ANALYSIS_JOB_TYPE, name=name, dir=str(out.resolve()), reinit="create_new",
        config={"x": result.x, "y": result.y, "group": ",".join(result.group), "at": list(result.at)},
    )
    try:
        run.log(
            {
                "frontier": wandb_table(result.frontiers),
                "runs": wandb_table(result.runs.drop(columns=CONFIG_COLUMN)),
                "comparison": wandb_table(result.comparison),
                **{path.stem: wandb.Image(str(path)) for path in result.files if path.suffix == ".png"},
            }
        )
        run.summary.update(result.runs["status"].value_counts().to_dict())
    finally:
        run.finish()
    return name


def sweep_group(runs: pd.DataFrame, sweep_dir: str) -> str:
    """The wandb group the members logged to: the sweep_id their summaries record."""
    ids = runs["sweep_id"].dropna().unique()
    return str(ids[0]) if len(ids) else sweep_dir


def wandb_table(table: pd.DataFrame) -> Any:
    """A wandb Table of a data frame, missing values as None and every cell a plain Python value."""
    import wandb

    plain = table.astype(object).where(table.notna(), None)
    return wandb.Table(columns=[str(column) for column in plain.columns], data=plain.values.tolist())
