"""The runs table: one row per run, with the same columns whether the runs come from disk or from wandb.
Its summary columns are the fields of sae_sweeps/summary.py."""

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from sae_sweeps.summary import CHOICE_KEYS, COMPLETED, INTEGER_KEYS, METRIC_KEYS, TEXT_KEYS

FAILED, UNFINISHED = "failed", "unfinished"
STATUSES = (COMPLETED, FAILED, UNFINISHED)

RUN_INFO_COLUMNS = ("source", "run", "location", "status", "error", "overrides")
CHOICE_COLUMNS = CHOICE_KEYS
METRIC_COLUMNS = METRIC_KEYS
CONFIG_COLUMN = "config"
SUMMARY_COLUMNS = CHOICE_COLUMNS + METRIC_COLUMNS
RUN_COLUMNS = RUN_INFO_COLUMNS + SUMMARY_COLUMNS + (CONFIG_COLUMN,)

TEXT_COLUMNS = frozenset(RUN_INFO_COLUMNS) | TEXT_KEYS
INTEGER_COLUMNS = INTEGER_KEYS
# Where the resolved config keeps what a summary repeats as flat keys: runs without a summary still say what they
# were. The first path the config has wins: a transcoder's `hook` is the output it writes.
CONFIG_PATHS_OF_COLUMNS = {
    "model": [("model", "name")],
    "hook": [("hook", "output"), ("hook", "name")],
    "hook_input": [("hook", "name")],
    "hook_layer": [("hook", "layer")],
    "sae_arch": [("sae_arch", "name")],
    "loss": [("loss", "name")],
    "seed": [("train", "seed")],
    "sweep_id": [("sweep_id",)],
}
MISSING = object()


def run_row(
    *,
    source: str,
    run: str,
    location: str,
    status: str,
    error: str | None,
    overrides: str | None,
    summary: Mapping[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """One row of the runs table; `summary` holds the flat summary keys (empty unless the run completed)."""
    row = {"source": source, "run": run, "location": location, "status": status, "error": error, "overrides": overrides}
    row.update({key: summary.get(key) for key in SUMMARY_COLUMNS})
    for column, paths in CONFIG_PATHS_OF_COLUMNS.items():
        values = [value for path in paths if (value := config_value(config, path)) not in (MISSING, None)]
        if row[column] is None and values:
            row[column] = values[0]
    if row["kind"] is None:  # a run without a summary, or one written before transcoders (summary_version < 5)
        row["kind"] = kind_from_config(config)
    row[CONFIG_COLUMN] = config
    return row


def kind_from_config(config: dict[str, Any]) -> str:
    """`sae`, `transcoder` or `skip_transcoder`, as summary.json's `kind` says it, from a run's config."""
    if config_value(config, ("hook", "output")) in (MISSING, None):
        return "sae"
    return "skip_transcoder" if config_value(config, ("hook", "skip")) is True else "transcoder"


def config_value(config: Any, path: Sequence[str]) -> Any:
    """The value at a path of keys into a nested config, or MISSING."""
    for name in path:
        if not isinstance(config, dict) or name not in config:
            return MISSING
        config = config[name]
    return config


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table built from `run_row` rows, with one dtype per column however the values came."""
    # Columns are built from object Series so pandas cannot guess dtypes differently from one input to another.
    return pd.DataFrame(
        {column: _typed(pd.Series([row[column] for row in rows], dtype=object), column) for column in RUN_COLUMNS}
    )


def _typed(values: pd.Series, column: str) -> pd.Series:
    if column == CONFIG_COLUMN:
        return values
    if column in TEXT_COLUMNS:
        return values.astype("str")
    numbers = pd.to_numeric(values, errors="coerce")
    # Integer columns stay integers (hook_layer 6, not 6.0) unless the producer wrote fractions anyway.
    if column in INTEGER_COLUMNS and (numbers.dropna() % 1 == 0).all():
        return numbers.astype("Int64")
    return numbers.astype("float64")
