"""Loading runs into the runs table: from Hydra sweep directories on disk, or from wandb projects."""

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.errors import AnalysisError
from analysis.schema import COMPLETED, FAILED, STATUSES, UNFINISHED, run_row, runs_frame
from analysis.wandb_source import WANDB_PREFIX, wandb_rows
from sae_sweeps.summary import FAILURE_FILENAME as FAILURE_FILE
from sae_sweeps.summary import SUMMARY_FILENAME as SUMMARY_FILE

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"

Source = str | Path


def load_runs(sources: Source | Sequence[Source]) -> pd.DataFrame:
    """Every run in the sources, completed or not.

    A source is a directory searched at any depth for run directories, or 'wandb:entity/project'.
    """
    source_list = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not source_list:
        raise AnalysisError("no sweep directory or wandb project given")
    rows = []
    for source in source_list:
        if str(source).startswith(WANDB_PREFIX):
            rows += wandb_rows(str(source).removeprefix(WANDB_PREFIX))
        else:
            rows += local_rows(Path(source))
    return runs_frame(rows)


def local_rows(root: Path) -> list[dict[str, Any]]:
    """One runs-table row per run directory under `root`."""
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise AnalysisError(f"no runs found under {root} (a run directory holds {HYDRA_CONFIG})")
    return [read_run(run_dir, root) for run_dir in run_dirs]


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under `root`, itself included, that hold .hydra/config.yaml, in natural order (2 before 10)."""
    if not root.exists():
        raise AnalysisError(f"{root} does not exist")
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a directory")
    return sorted((config.parent.parent for config in root.rglob(str(HYDRA_CONFIG))), key=_natural_key)


def read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    """The runs-table row of one run directory: completed (summary.json), failed (failure.json) or unfinished."""
    summary = _read_json(run_dir / SUMMARY_FILE)
    failure = _read_json(run_dir / FAILURE_FILE)
    # A completed summary wins over a failure.json: its metrics stand even if something failed afterwards.
    if summary.get("status") == COMPLETED:
        status, error = COMPLETED, None
    elif (run_dir / FAILURE_FILE).is_file():
        status, error = FAILED, failure.get("error") or f"{FAILURE_FILE} gives no error message"
    else:
        status, error = UNFINISHED, None
    overrides = _read_yaml(run_dir / HYDRA_OVERRIDES)
    relative = run_dir.relative_to(root).as_posix()
    return run_row(
        source=str(root),
        run=root.name if relative == "." else relative,
        location=str(run_dir.resolve()),
        status=status,
        error=error,
        overrides=" ".join(map(str, overrides)) if isinstance(overrides, list) else None,
        summary=summary if status == COMPLETED else {},
        config=summary.get("config") or _read_hydra_config(run_dir / HYDRA_CONFIG),
    )


def completed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs, or an AnalysisError saying what the runs are instead."""
    completed = runs[runs["status"] == COMPLETED]
    if completed.empty:
        failed = runs[runs["status"] == FAILED]
        first_failure = f"; first failure: {failed['run'].iloc[0]}: {failed['error'].iloc[0]}" if len(failed) else ""
        raise AnalysisError(f"no completed runs among {len(runs)} ({status_summary(runs)}){first_failure}")
    return completed


def status_summary(runs: pd.DataFrame) -> str:
    """'N completed, N failed, N unfinished'."""
    counts = runs["status"].value_counts()
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnalysisError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise AnalysisError(f"{path} does not hold a JSON object")
    return data


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise AnalysisError(f"{path} is not valid YAML ({' '.join(str(error).split())})") from error


def _read_hydra_config(path: Path) -> dict[str, Any]:
    # Hydra saves the config unresolved (hook.name: blocks.${hook.layer}.hook_resid_pre); resolve what can be.
    try:
        config = OmegaConf.load(path)
    except yaml.YAMLError as error:
        raise AnalysisError(f"{path} is not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(config, DictConfig):
        return {}
    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException:  # e.g. ${hydra:...}, which only a running Hydra app can resolve
        return OmegaConf.to_container(config, resolve=False)


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]
