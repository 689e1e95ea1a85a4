"""Interpolations our configs use beyond OmegaConf's own (`${gpus_per_node:...}` in the SLURM launcher
preset, `${by_loss:...}` in conf/sparsity). Registered on `import sae_sweeps`, so that every process
that reads a config resolves them, SLURM jobs that unpickle a task without running launch.py included."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """SLURM GPUs for a job whose trainer runs on `devices` GPUs (none for a CPU trainer)."""
    return None if accelerator == "cpu" else int(devices)


def by_loss(key: str, fallback: Any, *, _root_: DictConfig) -> Any:
    """The setting at `key` for this run's loss: an architecture gives one value for every loss, or a
    mapping from loss names to values with a `default` entry for the others; `fallback` when it gives none."""
    setting = OmegaConf.select(_root_, key)
    if setting is None:
        return fallback
    if not isinstance(setting, DictConfig):
        return setting
    if "default" not in setting:
        raise ValueError(f"{key} by loss needs a `default` entry for the other losses, got {list(setting)}")
    return setting.get(_root_.loss.name, setting.default)


def register_resolvers() -> None:
    for name, resolver in (("gpus_per_node", gpus_per_node), ("by_loss", by_loss)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
