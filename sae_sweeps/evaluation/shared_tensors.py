"""Tensors that no SAE changes, computed once and shared on disk by every run that needs the same ones.

A set of named tensors lives in `root/<key>/` (one `.npy` per tensor and a manifest written last),
keyed by a JSON description of everything it depends on and checked by size and sha256 before each
use, with the activation cache's lock, atomic writes and checksums (docs/activation_cache.md). The
held-out set's reference passes (reference_passes.py) and the sparse-probing documents' activations
(sparse_probing.py) are two such sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_sweeps.data.activation_cache.files import (
    LOCK, MANIFEST, announce, file_lock, shard_is_valid, write_atomically, write_hashed_atomically,
)
from sae_sweeps.data.activation_cache.key import cache_key


def lm_pass_key(kind: str, format_version: int, cache_fields: dict[str, Any], tokens_NT: Tensor, batch_contexts: int) -> dict[str, Any]:
    """The key of tensors an LM computes from `tokens_NT`, `batch_contexts` contexts per forward pass: the
    activation cache's fields (model weights, tokenizer, hook, data, numerics), the tokens themselves and the
    batch; `kind` and `format_version` say what was computed from them, and how."""
    tokens = tokens_NT.to("cpu", torch.int64).contiguous().numpy().tobytes()
    return {
        "format": format_version,
        "kind": kind,
        "activation_cache_fields": cache_fields,
        "contexts": {"shape": list(tokens_NT.shape), "sha256": hashlib.sha256(tokens).hexdigest()},
        "batch_contexts": int(batch_contexts),  # batched matmuls may round differently
    }


def cached_tensors(
    root: Path, key_fields: dict[str, Any], names: Sequence[str], compute: Callable[[], Sequence[Tensor]], what: str,
    cache_name: str = "evaluation cache",
) -> tuple[Tensor, ...]:
    """The tensors `names` from `root/<key>/`, computed by `compute()` (in the order of `names`) and written
    there first if absent or damaged; one process computes them while the others wait on the directory's
    lock. `what` names them, and `cache_name` the cache, in the message that says they are being computed."""
    directory = root / cache_key(key_fields)
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / LOCK, exclusive=False):
        found = _read(directory, key_fields, names)
    if found is not None:
        return found
    with file_lock(directory / LOCK, exclusive=True):
        found = _read(directory, key_fields, names)  # another process may have written them while we waited
        if found is not None:
            return found
        announce(f"{cache_name}: computing {what} into {directory}")
        tensors = tuple(compute())
        _write(directory, key_fields, names, tensors)
        return tensors


def _read(directory: Path, key_fields: dict[str, Any], names: Sequence[str]) -> tuple[Tensor, ...] | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key_fields:
        return None
    files = manifest["files"]
    if not all(name in files and shard_is_valid(directory / files[name]["file"], files[name]) for name in names):
        return None
    # Copy-on-write maps: only the rows a caller reads come into memory.
    return tuple(_load(directory / files[name]["file"], files[name]["dtype"]) for name in names)


def _load(path: Path, dtype: str) -> Tensor:
    return torch.from_numpy(np.load(path, mmap_mode="c")).to(getattr(torch, dtype))


def _write(directory: Path, key_fields: dict[str, Any], names: Sequence[str], tensors: Sequence[Tensor]) -> None:
    files = {}
    for name, tensor in zip(names, tensors, strict=True):
        path = directory / f"{name}.npy"
        # numpy has no bfloat16; float32 holds a bfloat16 model's activations exactly
        array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        size, sha256 = write_hashed_atomically(path, lambda f: np.save(f, array))  # chunked: no second copy in memory
        files[name] = {"file": path.name, "dtype": str(tensor.dtype).removeprefix("torch."), "bytes": size, "sha256": sha256}
    # The manifest last: its presence means every file is whole.
    write_atomically(directory / MANIFEST, lambda f: f.write(json.dumps({"key": key_fields, "files": files}, indent=1)), "w")
