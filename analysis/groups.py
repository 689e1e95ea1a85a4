"""Addressing a run attribute by key, and naming groups of runs and hook points."""

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.schema import CONFIG_COLUMN, MISSING, config_value

CONFIG_PREFIX = "config."
GROUP_COLUMN = "group"
SITE_COLUMNS = ("model", "hook")  # frontiers are never pooled across models or hook points

GroupKeys = str | Sequence[str]


def parse_group_keys(group: GroupKeys) -> tuple[str, ...]:
    """Group keys from 'sae_arch,loss' or from a sequence of keys."""
    keys = group.split(",") if isinstance(group, str) else list(group)
    keys = tuple(dict.fromkeys(key.strip() for key in keys if key.strip()))
    if not keys:
        raise AnalysisError("no group key given; use e.g. sae_arch,loss")
    return keys


def group_keys_for(runs: pd.DataFrame, group: GroupKeys) -> tuple[str, ...]:
    """`parse_group_keys`, plus `kind` when the runs mix SAEs and transcoders: the two are compared on one
    figure where they write the same hook, but never pooled into one frontier."""
    keys = parse_group_keys(group)
    if "kind" not in keys and "kind" in runs.columns and runs["kind"].nunique(dropna=True) > 1:
        keys = (*keys, "kind")
    return keys


def key_values(runs: pd.DataFrame, key: str) -> pd.Series:
    """The value of `key` for each run.

    The rule: a column of the runs table (the flat summary keys, source, status, ...) wins; any other key is a
    dotted path into the run's resolved config; a 'config.' prefix always means the config.
    """
    if not key.startswith(CONFIG_PREFIX) and key in runs.columns and key != CONFIG_COLUMN:
        return runs[key]
    path = key.removeprefix(CONFIG_PREFIX).split(".")
    values = runs[CONFIG_COLUMN].map(lambda config: config_value(config, path))
    if values.map(lambda value: value is MISSING).all():
        columns = [column for column in runs.columns if column != CONFIG_COLUMN]
        sections = sorted({name for config in runs[CONFIG_COLUMN] for name in config})
        raise AnalysisError(
            f"unknown group key {key!r}: not a runs-table column ({', '.join(columns)}) "
            f"nor a config path (config sections: {', '.join(sections) or 'none'})"
        )
    sections = values[values.map(lambda value: isinstance(value, dict))]
    if len(sections):
        inner = ", ".join(f"{key}.{name}" for name in sections.iloc[0])
        raise AnalysisError(f"key {key!r} is a config section, not a value; use one of {inner}")
    # Lists are unhashable; their text still tells groups apart.
    return values.map(lambda value: None if value is MISSING else str(value) if isinstance(value, list) else value)


def with_group_columns(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A copy of `runs` with a column per group key and a 'group' column labelling each run's group."""
    labelled = runs.copy()
    for key in keys:
        labelled[key] = key_values(runs, key)
    labelled[GROUP_COLUMN] = [group_label(keys, values) for values in zip(*(labelled[key] for key in keys))]
    return labelled


def group_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    """'sae_arch=topk, loss=e2e'."""
    return ", ".join(f"{key}={format_value(value)}" for key, value in zip(keys, values))


def format_value(value: Any) -> str:
    """A group value as text: how labels show it and how a baseline names it."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def site_label(model: Any, hook: Any) -> str:
    """'<model> <hook>': one hook point of one model."""
    return f"{format_value(model)} {format_value(hook)}"

