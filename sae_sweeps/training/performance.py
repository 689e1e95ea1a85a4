"""Speed switches for the SAE step, from `train.performance` (every key optional):

    train:
      performance:
        tf32: auto            # TF32 matmuls on CUDA (LM and SAE). auto = on where CUDA is used
        bf16_autocast: auto   # the SAE training step under bf16 autocast. auto = on CUDA only
        compile: false        # torch.compile the SAE's forward
        sparse_decode: auto   # TopK: decode from (values, indices) (saes/sparse_decode.py). auto = CPU, k <= d_sae/16
        cpu_threads: null     # torch.set_num_threads for CPU runs (null: torch's default)
        cpu_keep_freed_memory: auto  # glibc: keep freed large blocks instead of munmap (auto = CPU runs)

Two entry points: `configure_process(cfg)` sets process-wide flags (TF32, threads) and must run
before the activation cache is opened, because the cache key records the matmul precision the LM
ran with; `PerformanceCallback(cfg)` adapts the Lightning module (autocast, compile, sparse decode)
when training starts. Neither adds host-device copies or synchronisations to the step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from sae_sweeps.run_config import wants_cuda

Switch = bool | str  # True, False or "auto"


@dataclass(frozen=True)
class PerformanceSettings:
    tf32: Switch = "auto"
    bf16_autocast: Switch = "auto"
    compile: bool = False
    sparse_decode: Switch = "auto"
    cpu_threads: int | None = None
    cpu_keep_freed_memory: Switch = "auto"


def settings_from_cfg(cfg: Any) -> PerformanceSettings:
    """`train.performance` of a run config (a DictConfig or dict); missing keys take the defaults."""
    train = cfg.get("train") or {}
    raw = dict(train.get("performance") or {})
    known = PerformanceSettings.__dataclass_fields__
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"train.performance: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    return PerformanceSettings(**raw)


def _on(switch: Switch, cuda: bool, name: str) -> bool:
    if isinstance(switch, str):
        if switch != "auto":
            raise ValueError(f"train.performance.{name}={switch!r}: use true, false or auto")
        return cuda
    return bool(switch)


def device_for(cfg: Any) -> torch.device:
    """Where this process runs the LM and the SAE: the device Lightning gives its rank."""
    if wants_cuda(cfg, torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def configure_process(cfg: Any) -> PerformanceSettings:
    """Process-wide settings: TF32 matmuls on CUDA, CPU threads. Call before the LM runs."""
    settings = settings_from_cfg(cfg)
    cuda = device_for(cfg).type == "cuda"
    if cuda:
        tf32 = _on(settings.tf32, cuda, "tf32")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if settings.cpu_threads:
        torch.set_num_threads(int(settings.cpu_threads))
    if _on(settings.cpu_keep_freed_memory, not cuda, "cpu_keep_freed_memory"):
        keep_freed_memory()
    return settings


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap instead of returning it to the OS.

    A [4096 x 4608] float32 activation is 75 MB; glibc serves blocks that large with mmap and
    returns them with munmap, so every temporary of the SAE step page-faults its memory back in:
    measured here, an elementwise op on such a tensor takes ~35 ms with fresh memory and ~12 ms
    with reused memory, which made the non-matmul part of a CPU step ~3x slower. PyTorch has no
    caching allocator on CPU; this gives it one. Peak memory is unchanged (the same blocks are
    reused); the process just does not shrink after its peak. Linux/glibc only; no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1  # trim only above 2 GB free at the top
    except (OSError, AttributeError, ctypes.ArgumentError):
        return False
    return bool(ok)


def autocast_step(training_step, device_type: str, dtype: torch.dtype = torch.bfloat16):
    """training_step run under autocast; the backward (outside it, in Lightning's closure) uses the
    dtypes autocast chose, as with Lightning's own mixed-precision plugin."""

    @functools.wraps(training_step)
    def step(*args: Any, **kwargs: Any):
        with torch.autocast(device_type=device_type, dtype=dtype):
            return training_step(*args, **kwargs)

    return step


class PerformanceCallback(L.Callback):
    """Applies `train.performance` to the module once it sits on its device (on_fit_start);
    records what it did in `self.applied`."""

    def __init__(self, cfg: Any) -> None:
        self.settings = settings_from_cfg(cfg)
        self.applied: dict[str, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.applied:
            return
        device = pl_module.device
        cuda = device.type == "cuda"
        sae = getattr(pl_module, "sae", None)
        if sae is not None:
            self.applied["sparse_decode"] = sae.enable_fast_path(self.settings.sparse_decode, device)
        if _on(self.settings.bf16_autocast, cuda, "bf16_autocast"):
            pl_module.training_step = autocast_step(pl_module.training_step, device.type)
            self.applied["bf16_autocast"] = True
        if self.settings.compile and sae is not None:
            sae.compile()
            self.applied["compile"] = True
        self.applied["tf32"] = bool(cuda and torch.backends.cuda.matmul.allow_tf32)
        self.applied["cpu_threads"] = torch.get_num_threads()
