"""Checks on a composed config that run before anything expensive (model loading, data), so that
bad input fails in a second with one line naming the offending key.

The generic checks import nothing heavy; the architecture's own checks (`check_config` on its
class, e.g. TopK's `sparsity.k`) come last, since importing the class imports torch.
tests/test_bad_input.py holds the table of bad inputs and the line each one gets.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from sae_sweeps.cli_help import unknown_key_message, unknown_option_message
from sae_sweeps.data.text import TextSourceError, check_text_source
from sae_sweeps.models.hook_point import HookError, HookPoint
from sae_sweeps.run_config import dictionary_size, hook_point, preset_widths


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


LIGHTNING_PRECISIONS = (
    "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "transformer-engine",
    "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16,
)
"""What Lightning's Trainer accepts as `precision`."""
WANDB_MODES = ("online", "offline", "disabled", "shared")


def check_config(cfg: DictConfig) -> None:
    try:
        # Every interpolation resolves now (conf/sparsity's `${by_loss:...}`), also those a run without a
        # target or with another loss reads only later, when its config is logged.
        OmegaConf.to_container(cfg, resolve=True)
        _check_settings(cfg)
    except InterpolationResolutionError as err:
        raise ConfigError(str(err).splitlines()[0].split("while resolving interpolation: ")[-1]) from None


def _check_settings(cfg: DictConfig) -> None:
    for key in ("resume", "start_over"):
        _require(isinstance(cfg.get(key, False), bool), key, cfg.get(key), "must be true or false")
    hook = _check_hook(cfg)
    _check_number(cfg, "sae_arch.expansion_factor", minimum=0, strict=True, optional=cfg.sae_arch.d_sae is not None)
    d_sae = dictionary_size(cfg, preset_widths(cfg, hook)[0])
    _require(d_sae >= 1, "sae_arch.d_sae", d_sae, "must be at least 1")
    _check_number(cfg, "sae_arch.encoder_init_scale", minimum=0, strict=True)
    _check_number(cfg, "sparsity.coefficient", minimum=0)
    _check_number(cfg, "sparsity.warmup_fraction", minimum=0, maximum=1)
    _check_train(cfg)
    _check_data(cfg)
    _check_trainer(cfg)
    _check_logger(cfg)
    for key in ("loss", "sae_arch"):
        if "module" not in cfg[key] or "_target_" not in cfg[key].module:
            raise ConfigError(f"{key}={cfg[key].get('name')}: config has no module._target_ to build")
    _check_architecture(cfg, d_sae)
    _check_loss(cfg)


def _check_hook(cfg: DictConfig) -> HookPoint:
    n_layers = int(cfg.model.n_layers)
    layer = cfg.hook.get("layer")
    if layer is not None:
        _require(isinstance(layer, int) and 0 <= layer < n_layers, "hook.layer", layer,
                 f"is out of range: {cfg.model.name} has layers 0..{n_layers - 1}")
    try:
        hook = hook_point(cfg)
        hook.check_layer(n_layers)
    except HookError as err:
        raise ConfigError(str(err)) from None
    skip = cfg.hook.get("skip", False)
    _require(isinstance(skip, bool), "hook.skip", skip, "must be true or false")
    _require(not skip or hook.is_transcoder, "hook.skip", skip,
             "needs a transcoder: a skip path maps hook.name to hook.output (use hook=transcoder)")
    return hook


def _check_train(cfg: DictConfig) -> None:
    _check_number(cfg, "train.lr", minimum=0, strict=True)
    _check_number(cfg, "train.batch_size", minimum=1, integer=True)
    _check_number(cfg, "train.tokens", minimum=1, integer=True)
    _require(cfg.train.tokens >= cfg.train.batch_size, "train.tokens", cfg.train.tokens,
             f"is smaller than one batch (train.batch_size={cfg.train.batch_size})")
    for key in ("eval_every_fraction", "checkpoint_every_fraction", "lr_warmup_fraction"):
        _check_number(cfg, f"train.{key}", minimum=0, maximum=1, optional=True)
    for key in ("lr_decay_fraction", "lr_final_fraction"):
        _check_number(cfg, f"train.{key}", minimum=0, maximum=1)


def _check_data(cfg: DictConfig) -> None:
    data = cfg.data
    _check_number(cfg, "data.context_size", minimum=2, integer=True)
    n_ctx = cfg.model.get("n_ctx")
    if n_ctx is not None:
        _require(data.context_size <= n_ctx, "data.context_size", data.context_size,
                 f"is longer than {cfg.model.name} takes (model.n_ctx={n_ctx})")
    _check_number(cfg, "data.holdout_every", minimum=2, integer=True)
    _check_number(cfg, "data.eval_contexts", minimum=1, integer=True)
    _check_number(cfg, "data.periodic_eval_contexts", minimum=1, integer=True)
    _check_number(cfg, "data.eval_batch_contexts", minimum=1, integer=True)
    _check_number(cfg, "data.lm_batch_size", minimum=1, integer=True)
    _check_number(cfg, "data.scale_sample_contexts", minimum=1, integer=True)
    _require(isinstance(data.get("sparse_probing"), bool), "data.sparse_probing", data.get("sparse_probing"), "must be true or false")
    _check_number(cfg, "data.probe_train_documents", minimum=1, integer=True)
    _check_number(cfg, "data.probe_held_out_documents", minimum=1, integer=True)
    if data.path is not None:
        try:
            check_text_source(str(data.path), data.text_column)
        except TextSourceError as err:
            raise ConfigError(str(err)) from None


def _check_trainer(cfg: DictConfig) -> None:
    devices = cfg.trainer.devices
    _require(devices == "auto" or (isinstance(devices, int) and devices >= 1) or (isinstance(devices, (list, tuple)) and devices),
             "trainer.devices", devices, "must be a number >= 1, a list of device ids, or auto")
    _check_number(cfg, "trainer.num_nodes", minimum=1, integer=True)
    precision = cfg.trainer.precision
    _require(precision in LIGHTNING_PRECISIONS, "trainer.precision", precision,
             f"is not a precision Lightning knows; use one of {', '.join(map(str, LIGHTNING_PRECISIONS[:6]))}")


def _check_logger(cfg: DictConfig) -> None:
    logger = cfg.get("logger")
    if logger is not None and "mode" in logger:
        _require(logger.mode in WANDB_MODES, "logger.mode", logger.mode, f"must be one of {', '.join(WANDB_MODES)}")


def _check_architecture(cfg: DictConfig, d_sae: int) -> None:
    from sae_sweeps.saes.base import SettingError

    try:
        _target_class(cfg, "sae_arch").check_config(cfg, d_sae)
    except SettingError as err:
        raise ConfigError(str(err)) from None


def _check_loss(cfg: DictConfig) -> None:
    try:
        _target_class(cfg, "loss").check_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _target_class(cfg: DictConfig, group: str) -> type:
    """The class `<group>.module._target_` names (importing it imports torch: these checks come last)."""
    target = str(cfg[group].module._target_)
    module_name, _, class_name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{group}.module._target_={target}: no such class") from None


def _check_number(
    cfg: DictConfig, key: str, minimum: float | None = None, maximum: float | None = None,
    strict: bool = False, integer: bool = False, optional: bool = False,
) -> None:
    """`key` (dotted) holds a number in range: one line naming the key otherwise."""
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, (DictConfig, dict)) else None
    if node is None and optional:
        return
    kind = "a whole number" if integer else "a number"
    _require(isinstance(node, (int, float)) and not isinstance(node, bool) and (not integer or isinstance(node, int)),
             key, node, f"must be {kind}")
    if minimum is not None:
        _require(node > minimum if strict else node >= minimum, key, node, f"must be {'>' if strict else '>='} {minimum:g}")
    if maximum is not None:
        _require(node <= maximum, key, node, f"must be <= {maximum:g}")


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
