"""Where a run's results go: one wandb run per sweep member (offline unless asked otherwise), a
local record (summary.json, failure.json) that needs no wandb at all, and a console that shows
our progress while third-party chatter goes only to the run's launch.log."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

SUMMARY_FILENAME = "summary.json"
FAILURE_FILENAME = "failure.json"
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
            "dir": save_dir,
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


# -- the console ---------------------------------------------------------------------------------------
OUR_PACKAGES = ("sae_sweeps", "analysis")


class ConsoleFilter(logging.Filter):
    """What the console shows: our own messages, Hydra's, and warnings raised by our code;
    Lightning's notices and third-party warnings go only to the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return any(f"/{package}/" in record.getMessage().split(":", 1)[0] for package in OUR_PACKAGES)
        if record.name.startswith("lightning"):
            return record.levelno >= logging.ERROR
        return True


class ConsoleFormatter(logging.Formatter):
    """Just the message on the console ("warning: ..." above INFO); the log file keeps Hydra's format."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":  # "path:line: Category: text\n  source line" -> "text"
            message = message.split(": ", 2)[-1].splitlines()[0]
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def quiet_console() -> None:
    """Route Lightning's and Python's warnings into logging (so into launch.log), and keep them
    and the Hugging Face weight-loading bars off the console. Call it once Hydra has set up
    logging for the job."""
    import transformers

    logging.captureWarnings(True)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # each has a console handler of its own
        lightning_logger = logging.getLogger(name)
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
        lightning_logger.propagate = True
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the FileHandler of launch.log
            handler.addFilter(ConsoleFilter())
            handler.setFormatter(ConsoleFormatter())
    transformers.utils.logging.disable_progress_bar()


# -- the local record ------------------------------------------------------------------------------
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
