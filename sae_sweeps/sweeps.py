"""A sweep is one thing a user can find again: its directory is named after the command that
started it, so `resume=true` on the same command finds it and skips members that finished."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sae_sweeps.config_checks import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")


def _is_experiment_override(arg: str) -> bool:
    """Overrides that change what is trained (not where or how it is launched, nor `resume`)."""
    key = arg.lstrip("+~").split("=", 1)[0]
    return "=" in arg and not arg.startswith("-") and key != "resume" and not key.startswith("hydra")


def sweep_key(argv: list[str]) -> str:
    """Eight hex digits that identify a sweep command, independent of override order and launcher."""
    overrides = sorted(a for a in argv if _is_experiment_override(a))
    return hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]


def wants_resume(argv: list[str]) -> bool:
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("resume=")]
    if values and values[-1].lower() not in ("true", "false"):
        raise ConfigError(f"resume={values[-1]} must be true or false")
    return bool(values) and values[-1].lower() == "true"


def add_sweep_dir(argv: list[str], multirun_root: Path = Path("multirun")) -> list[str]:
    """For a multirun without an explicit hydra.sweep.dir, name the sweep directory
    `multirun/<date>/<time>-<key>`, or with resume=true reuse the newest one with this key."""
    if not any(flag in argv for flag in MULTIRUN_FLAGS) or any(a.startswith("hydra.sweep.dir=") for a in argv):
        return argv
    key = sweep_key(argv)
    if wants_resume(argv):
        earlier = sorted(multirun_root.glob(f"*/*-{key}"), key=lambda p: p.parts[-2:])
        if not earlier:
            raise ConfigError(f"resume=true: no earlier sweep of this command (key {key}) under {multirun_root}/")
        return [*argv, f"hydra.sweep.dir={earlier[-1]}"]
    return [*argv, f"hydra.sweep.dir={multirun_root}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}-{key}"]
