"""The passes over the held-out set that no SAE changes, computed once and shared.

Every evaluation splices an SAE into the LM from the hook's layer on, and compares it with the
clean LM and the LM with the hook zero-ablated. Three of those quantities do not depend on the SAE:
the residual where the spliced pass starts, the clean model's input to its unembedding (from which
the clean next-token distribution, needed for the KL, costs one matmul instead of the whole
suffix of the model), and the clean and zero-ablated cross-entropy of each context. A run computes
them once for all its evaluations; with a cache directory, every run that evaluates on the same
held-out contexts of the same model and hook reads them from disk, keyed and verified as the
activation cache is (docs/activation_cache.md).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sae_sweeps.data.activation_cache.files import (
    LOCK, MANIFEST, announce, file_lock, shard_is_valid, write_atomically,
)
from sae_sweeps.data.activation_cache.key import cache_key
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.splicing import cross_entropy, next_token_log_probs, next_token_mask, summed_over_predictions, zero_ablate

FORMAT_VERSION = 1
TENSORS = ("resid_NTD", "unembed_input_NTD", "ce_clean_N", "ce_zero_N")


class ReferencePasses(NamedTuple):
    """What the held-out contexts give without an SAE, one row per context, on the CPU."""

    resid_NTD: Tensor
    """resid_pre of the hook's layer: where every spliced pass starts."""
    unembed_input_NTD: Tensor
    """The clean pass's input to the unembedding: the clean logits are `model.unembed` of it."""
    ce_clean_N: Tensor
    """Summed next-token cross-entropy of the clean LM in each context (float64)."""
    ce_zero_N: Tensor
    """Summed next-token cross-entropy with the hook zero-ablated in each context (float64)."""

    def first(self, n_contexts: int) -> ReferencePasses:
        """The same passes for the first `n_contexts` contexts."""
        return ReferencePasses(*(tensor[:n_contexts] for tensor in self))


@torch.no_grad()
def compute_reference_passes(
    model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int
) -> ReferencePasses:
    """Run the clean and the zero-ablated LM over the held-out contexts, `batch_contexts` at a time."""
    parts: dict[str, list[Tensor]] = {name: [] for name in TENSORS}
    for tokens_BT in contexts_NT.split(batch_contexts):
        tokens_BT = tokens_BT.to(model.device)
        ordinary_BT = ~model.special_token_mask(tokens_BT)
        targets_BT, predict_BT = tokens_BT[:, 1:], next_token_mask(ordinary_BT)
        resid_BTD = model.residual_before(tokens_BT, hook.layer)
        clean_logits, unembed_input_BTD = model.logits_and_unembed_input(resid_BTD, hook.layer)
        zero_hook = lambda acts_BTD, hook: zero_ablate(acts_BTD, ordinary_BT)  # noqa: E731
        zero_logits = model.logits_from(resid_BTD, hook.layer, [(hook.name, zero_hook)])
        for name, value in (
            ("resid_NTD", resid_BTD),
            ("unembed_input_NTD", unembed_input_BTD),
            ("ce_clean_N", _summed_cross_entropy(clean_logits, targets_BT, predict_BT)),
            ("ce_zero_N", _summed_cross_entropy(zero_logits, targets_BT, predict_BT)),
        ):
            parts[name].append(value.cpu())
    return ReferencePasses(*(torch.cat(parts[name]) for name in TENSORS))


def _summed_cross_entropy(logits_BTV: Tensor, targets_BT: Tensor, predict_BT: Tensor) -> Tensor:
    return summed_over_predictions(cross_entropy(next_token_log_probs(logits_BTV), targets_BT), predict_BT)


def reference_passes_key(cache_fields: dict[str, Any], contexts_NT: Tensor, batch_contexts: int) -> dict[str, Any]:
    """Everything the reference passes depend on: the activation cache's fields (model weights,
    tokenizer, hook, data, numerics), the held-out tokens themselves, and the forward batch."""
    tokens = contexts_NT.to("cpu", torch.int64).contiguous().numpy().tobytes()
    return {
        "format": FORMAT_VERSION,
        "kind": "reference_passes",
        "activation_cache_fields": cache_fields,
        "contexts": {"shape": list(contexts_NT.shape), "sha256": hashlib.sha256(tokens).hexdigest()},
        "batch_contexts": int(batch_contexts),  # batched matmuls may round differently
    }


def cached_reference_passes(
    root: Path, key_fields: dict[str, Any], model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int
) -> ReferencePasses:
    """The reference passes from `root/<key>/`, computed and written there first if absent or damaged;
    one process computes them while the others wait on the directory's lock."""
    directory = root / cache_key(key_fields)
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / LOCK, exclusive=False):
        found = _read(directory, key_fields)
    if found is not None:
        return found
    with file_lock(directory / LOCK, exclusive=True):
        found = _read(directory, key_fields)  # another process may have written them while we waited
        if found is not None:
            return found
        announce(f"evaluation cache: computing the clean and zero-ablated passes into {directory}")
        passes = compute_reference_passes(model, hook, contexts_NT, batch_contexts)
        _write(directory, key_fields, passes)
        return passes


def _read(directory: Path, key_fields: dict[str, Any]) -> ReferencePasses | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key_fields:
        return None
    files = manifest["files"]
    if not all(shard_is_valid(directory / files[name]["file"], files[name]) for name in TENSORS):
        return None
    # Copy-on-write maps: only the contexts an evaluation reads come into memory.
    return ReferencePasses(*(_load(directory / files[name]["file"], files[name]["dtype"]) for name in TENSORS))


def _load(path: Path, dtype: str) -> Tensor:
    return torch.from_numpy(np.load(path, mmap_mode="c")).to(getattr(torch, dtype))


def _write(directory: Path, key_fields: dict[str, Any], passes: ReferencePasses) -> None:
    files = {}
    for name, tensor in zip(TENSORS, passes):
        path = directory / f"{name}.npy"
        buffer = io.BytesIO()
        # numpy has no bfloat16; float32 holds a bfloat16 model's activations exactly
        np.save(buffer, (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy())
        data = buffer.getvalue()
        write_atomically(path, lambda f: f.write(data))
        files[name] = {
            "file": path.name, "dtype": str(tensor.dtype).removeprefix("torch."),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        }
    # The manifest last: its presence means every file is whole.
    write_atomically(directory / MANIFEST, lambda f: f.write(json.dumps({"key": key_fields, "files": files}, indent=1)), "w")
