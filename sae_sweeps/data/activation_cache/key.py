"""The cache key: everything that determines the cached activations, as JSON, and its sha256."""

from __future__ import annotations

import glob as globlib
import hashlib
import importlib.metadata
import json
import os
from typing import Any

import torch

from sae_sweeps.data.text import local_text_files
from sae_sweeps.models import HookPoint, LanguageModel

FORMAT_VERSION = 1


def weights_fingerprint(module: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """sha256 over every parameter's name, shape, dtype and an evenly strided sample of its values:
    any real change of weights changes it, and it costs milliseconds even for large models."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Where the text comes from, and for local or packaged files, which files (name and size;
    mtime too for local files) so that edited text gets a new cache."""
    from sae_sweeps.models.loading import package_root  # transformers: only for packaged corpora

    if data.get("path") is not None:
        files = local_text_files(str(data.path))
        listing = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        return {"path": str(data.path), "text_column": data.get("text_column", "text"), "files": json_sha256(listing)}
    if data.get("hub_name") is not None:
        return {
            "hub_name": data.hub_name, "hub_config": data.get("hub_config"),
            "hub_split": data.get("hub_split"), "text_column": data.get("text_column", "text"),
        }
    root = package_root(data.package)
    files = sorted(globlib.glob(str(root / data.package_glob)))
    listing = [(os.path.relpath(f, root), os.stat(f).st_size) for f in files]
    try:
        version = importlib.metadata.version(data.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"package": data.package, "version": version, "glob": data.package_glob, "files": json_sha256(listing)}


def cache_key_fields(
    model: LanguageModel,
    hook: HookPoint,
    data: Any,
    storage_dtype: str = "float32",
    hf_name: str | None = None,
    split_by_context: bool = False,
) -> dict[str, Any]:
    """Everything that determines the cached activations, as JSON. Change any and the key changes.

    `split_by_context`: the corpus has too few documents to hold out whole ones (text.py).
    """
    probe = model.activations_at(torch.full((1, 2), model.bos_token_id, device=model.device), hook)
    device = model.device
    numerics = {"device": device.type, "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        numerics["allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    data_fields = {
        **data_fingerprint(data),
        "context_size": int(data.context_size),
        "shuffle_seed": int(data.shuffle_seed),
        "holdout_every": int(data.holdout_every),
    }
    if split_by_context:  # only then: caches of document-split corpora keep the key they had before
        data_fields["split"] = "contexts"
    return {
        "format": FORMAT_VERSION,
        "model": {"name": model.name, "hf_name": hf_name, "weights": weights_fingerprint(model.bridge)},
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
        "special_token_ids": sorted(model.special_token_ids),
        "bos_token_id": model.bos_token_id,
        "eos_token_id": model.eos_token_id,
        "hook": hook.key,
        "d_in": int(probe.shape[-1]),
        "activation_dtype": str(probe.dtype).removeprefix("torch."),
        "storage_dtype": storage_dtype,
        "numerics": numerics,
        "data": data_fields,
    }


def cache_key(fields: dict[str, Any]) -> str:
    return json_sha256(fields)[:20]


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
