"""Interpolations our configs use beyond OmegaConf's own (`${gpus_per_node:...}` in the SLURM launcher
preset). Registered on `import sae_sweeps`, so that every process that reads a config resolves
them, SLURM jobs that unpickle a task without running launch.py included."""

from __future__ import annotations

from omegaconf import OmegaConf


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """SLURM GPUs for a job whose trainer runs on `devices` GPUs (none for a CPU trainer)."""
    return None if accelerator == "cpu" else int(devices)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gpus_per_node"):
        OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node)
