"""Values every part of a run derives from the composed config the same way (no torch: the config
checks use them before anything heavy is imported)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sae_sweeps.models.hook_point import HookPoint


def dictionary_size(cfg: DictConfig, d_in: int) -> int:
    """`sae_arch.d_sae` if set, else `sae_arch.expansion_factor` x the input width."""
    return int(cfg.sae_arch.d_sae) if cfg.sae_arch.d_sae else int(cfg.sae_arch.expansion_factor * d_in)


def preset_width(cfg: DictConfig, hook_name: str) -> int:
    """The activation width at a hook name according to the model preset (checked once the model loads):
    d_mlp for the MLP's hidden layer (mlp.hook_pre, mlp.hook_post), d_model elsewhere."""
    hidden = hook_name.endswith((".mlp.hook_pre", ".mlp.hook_post"))
    return int(cfg.model.d_mlp if hidden else cfg.model.d_model)


def preset_widths(cfg: DictConfig, hook: HookPoint) -> tuple[int, int]:
    """(d_in, d_out) at a hook point according to the model preset; d_out = d_in for an SAE."""
    return preset_width(cfg, hook.name), preset_width(cfg, hook.writes)


def hook_point(cfg: DictConfig) -> HookPoint:
    """The run's hook point: `hook.name`, and for a transcoder `hook.output` (HookError naming the key)."""
    return HookPoint.parse(cfg.hook.name, cfg.hook.get("output"))


def dead_window_tokens(cfg: DictConfig) -> int:
    """Latents silent this long count as dead: `train.dead_window_tokens`, or by default a quarter
    of the budget capped at the 10M tokens of Gao et al. 2024."""
    if cfg.train.dead_window_tokens:
        return int(cfg.train.dead_window_tokens)
    return max(1, min(10_000_000, cfg.train.tokens // 4))


def every_n_steps(fraction: float | None, n_steps: int) -> int:
    """Steps between periodic events that happen every `fraction` of training (0: never)."""
    return max(1, int(fraction * n_steps)) if fraction else 0


def wants_cuda(cfg: DictConfig | dict, cuda_available: bool) -> bool:
    """Whether this run trains on a GPU: `trainer.accelerator` gpu/cuda, or auto with one present."""
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available)


def activation_cache_root(cfg: DictConfig) -> Path | None:
    """Where local-loss runs share their activations (`paths.activation_cache`), or None with
    `data.activation_cache=false` (every run computes its own, live)."""
    if not cfg.data.get("activation_cache", True):
        return None
    return Path(str(cfg.paths.activation_cache)).expanduser()


def clean_pass_root(cfg: DictConfig) -> Path | None:
    """Where end-to-end runs share the clean LM's passes over their training contexts (`paths.clean_pass_cache`),
    or None with `data.clean_pass_cache=false` (each step runs them)."""
    if not cfg.data.get("clean_pass_cache", True):
        return None
    return Path(str(cfg.paths.clean_pass_cache)).expanduser()


def eval_cache_root(cfg: DictConfig) -> Path | None:
    """Where runs share the held-out set's clean and zero-ablated passes (`paths.eval_cache`), or
    None with `data.eval_cache=false` (each run computes its own, once)."""
    if not cfg.data.get("eval_cache", True):
        return None
    return Path(str(cfg.paths.eval_cache)).expanduser()
