"""wandb, where a run's results go besides its directory: one wandb run per sweep member (offline
unless asked otherwise), written through Lightning. Finishing it is sae_sweeps/wandb_member.py;
the local record (summary.json, failure.json) that needs no wandb is sae_sweeps/run_directory.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

TRAIN_JOB_TYPE = "train"
TOKENS_STEP = "tokens_trained"  # the x axis of every training and evaluation curve
TAGGED_CHOICES = ("model", "hook", "sae_arch", "loss")  # config groups whose choice becomes a "group:choice" tag
DENSITY_HISTOGRAM = "eval/feature_density_log10"


class WandbRun(Logger):
    """A Lightning logger that writes one wandb run, created on first use and finished by
    `finish_member_run` (not by Lightning, so that the final evaluation still lands in it).

    Unlike Lightning's WandbLogger it never reuses a run left open by an earlier sweep member
    (reinit="finish_previous"), and it plots train/* and eval/* against tokens trained.
    """

    def __init__(self, init_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.init_kwargs = init_kwargs
        self._run: Any = None

    @property
    def name(self) -> str:
        return self.init_kwargs["project"]

    @property
    def version(self) -> str:
        return self.init_kwargs["id"]

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._run is None:
            import wandb

            self._run = wandb.init(**self.init_kwargs, reinit="finish_previous")
            self._run.define_metric(TOKENS_STEP)
            for prefix in ("train/*", "eval/*"):
                self._run.define_metric(prefix, step_metric=TOKENS_STEP)
        return self._run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.experiment.log({**metrics, "trainer/global_step": step})

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: the run's config is the whole resolved Hydra config, given at creation."""

    @rank_zero_only
    def log_row(self, row: dict[str, Any]) -> None:
        self.experiment.log(row)


def wandb_logger(
    project: str,
    mode: str,
    save_dir: str,
    run_name: str,
    run_config: dict[str, Any],
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
) -> WandbRun:
    """The member's wandb run (`mode`: online, offline, the default, for `wandb sync` later, or
    disabled): grouped by sweep, job_type "train", tags and a name from its config choices."""
    os.environ.setdefault("WANDB_SILENT", "true")
    member = Path(save_dir).name if run_config.get("sweep_id") else None
    return WandbRun(
        {
            "id": uuid.uuid4().hex[:8],
            "project": project,
            "entity": entity,
            "group": group,
            "job_type": TRAIN_JOB_TYPE,
            "name": f"{run_name} #{member}" if member else run_name,
            "tags": [*choice_tags(run_config), *(tags or [])],
            "config": wandb_config(run_config),
            "dir": str(Path(save_dir).resolve()),  # absolute: see analysis/sweep_end.py
            "mode": mode,
        }
    )


def choice_tags(run_config: Mapping[str, Any]) -> list[str]:
    """"sae_arch:topk", "loss:e2e", ...: one tag per config choice, for filtering a sweep's runs."""
    return [f"{group}:{run_config[group]['name']}" for group in TAGGED_CHOICES if isinstance(run_config.get(group), Mapping)]


def wandb_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested config, plus every leaf again under its dotted key ("sae_arch.name": "topk")
    so that wandb's run table can filter and group on any value."""
    return {**run_config, **flat_keys(run_config)}


def flat_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= flat_keys(value, f"{prefix}{key}.")
        elif prefix:
            flat[f"{prefix}{key}"] = value
    return flat


def wandb_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What goes into the wandb run summary: summary.json's scalars, under the same names."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def log_summary_to_wandb(loggers: Iterable[Logger], summary: dict[str, Any]) -> None:
    for logger in loggers:
        if isinstance(logger, WandbRun) and rank_zero_only.rank == 0:
            logger.experiment.summary.update(wandb_summary(summary))


def log_evaluation(
    loggers: Iterable[Logger], scalars: dict[str, float], histogram: dict[str, Any], tokens_trained: int, step: int
) -> None:
    """One history row per held-out evaluation: eval/<name> for every scalar the evaluator
    returned (standard errors included), the feature-density histogram, and tokens trained."""
    row = {f"eval/{name}": value for name, value in scalars.items()}
    for logger in loggers:
        if isinstance(logger, WandbRun):
            import wandb

            counts, edges = histogram["counts"], histogram["log10_bin_edges"]
            logger.log_row(
                row
                | {
                    DENSITY_HISTOGRAM: wandb.Histogram(np_histogram=(counts, edges)),
                    "eval/never_fired_latents": histogram["never_fired"],
                    TOKENS_STEP: tokens_trained,
                }
            )
        else:
            logger.log_metrics(row | {TOKENS_STEP: tokens_trained}, step=step)
