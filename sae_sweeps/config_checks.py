"""Checks on a composed config that run before anything expensive (model loading, data), so
that bad input fails in a second with one line naming the offending key."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sae_sweeps.cli_help import unknown_key_message, unknown_option_message
from sae_sweeps.data.text import local_text_files
from sae_sweeps.models.hook_point import HookError, HookPoint


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def d_sae_for(cfg: DictConfig, d_in: int) -> int:
    """The dictionary size: `sae_arch.d_sae` if set, else expansion_factor x the input width."""
    return int(cfg.sae_arch.d_sae) if cfg.sae_arch.d_sae else int(cfg.sae_arch.expansion_factor * d_in)


def expected_width(cfg: DictConfig, hook: HookPoint) -> int:
    """The activation width at a hook, from the model preset (checked again once it loads)."""
    inside_mlp = ".mlp.hook_" in hook.name
    return int(cfg.model.d_mlp if inside_mlp else cfg.model.d_model)


def check_config(cfg: DictConfig) -> None:
    try:
        hook = HookPoint.parse(cfg.hook.name)
        hook.check_layer(int(cfg.model.n_layers))
    except HookError as err:
        raise ConfigError(str(err)) from None
    d_sae = d_sae_for(cfg, expected_width(cfg, hook))
    _require(d_sae >= 1, "sae_arch.d_sae", d_sae, "must be at least 1")
    _require(cfg.sparsity.coefficient >= 0, "sparsity.coefficient", cfg.sparsity.coefficient, "must be >= 0")
    k = cfg.sparsity.k
    _require(k >= 1, "sparsity.k", k, "must be at least 1")
    _require(k <= d_sae, "sparsity.k", k, f"is larger than the dictionary (d_sae={d_sae})")
    if cfg.sparsity.get("target_l0") is not None:
        _require(0 < cfg.sparsity.target_l0 <= d_sae, "sparsity.target_l0", cfg.sparsity.target_l0, f"must be in (0, {d_sae}]")
    _require(cfg.train.lr > 0, "train.lr", cfg.train.lr, "must be > 0")
    _require(cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size, "must be at least 1")
    _require(
        cfg.train.tokens >= cfg.train.batch_size,
        "train.tokens", cfg.train.tokens, f"is smaller than one batch (train.batch_size={cfg.train.batch_size})",
    )
    _require(cfg.data.context_size >= 2, "data.context_size", cfg.data.context_size, "must be at least 2")
    if cfg.data.path is not None:
        try:
            local_text_files(str(cfg.data.path))
        except FileNotFoundError:
            raise ConfigError(f"data.path={cfg.data.path}: no such file or folder, or no .txt/.jsonl/.json files in it") from None
    for key in ("loss", "sae_arch"):
        if "module" not in cfg[key] or "_target_" not in cfg[key].module:
            raise ConfigError(f"{key}={cfg[key].get('name')}: config has no module._target_ to build")


def _require(ok: bool, key: str, value: object, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} {problem}")


def check_group_choices(overrides: list[str], conf_dir: Path) -> None:
    """Catch `sae_arch=typo` on the command line with one line, before Hydra's longer message.

    Covers sweep lists (`loss=local,e2e`); anything Hydra-specific (`+x=`, `hydra/...`) is left to Hydra.
    """
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key not in groups or any(c in value for c in "()[]{}$"):
            continue
        available = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice not in available:
                raise ConfigError(unknown_option_message(key, choice, available))
    if (unknown_key := unknown_key_message(overrides, conf_dir)) is not None:  # train.token=: Hydra's hint, +train.token, would do nothing
        raise ConfigError(unknown_key)
