"""Loaders for the `model` config group: each returns a frozen `LanguageModel`.

All of them end in the same place: a Hugging Face causal LM and tokenizer handed to
`TransformerBridge.boot_transformers`, so the tiny test model exercises the hub models' path.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
import transformers
from transformer_lens.model_bridge import TransformerBridge

from sae_sweeps.models.language_model import LanguageModel
from sae_sweeps.models.tiny import build_tiny_model


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _boot(source: str, hf_model, tokenizer, name: str) -> LanguageModel:
    bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer)
    return LanguageModel(bridge, tokenizer, name)


def load_hub_model(name: str, hf_name: str, revision: str | None = None, dtype: str = "float32") -> LanguageModel:
    """A model from the Hugging Face hub (or a local directory in the hub's layout)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_name, revision=revision)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_name, revision=revision, dtype=_dtype(dtype)
    )
    return _boot(hf_name, hf_model, tokenizer, name)


def package_root(package: str) -> Path:
    """The folder an installed PyPI distribution's files are relative to (site-packages)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"package {package!r} is not installed (pip install --no-deps {package})"
        ) from err
    return Path(str(dist.locate_file("")))


def locate_package_file(package: str, relative_path: str) -> Path:
    """Absolute path of a file that an installed PyPI distribution ships."""
    path = package_root(package) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} does not ship {relative_path}")
    return path


def load_gguf_from_package(name: str, package: str, file: str, dtype: str = "float32") -> LanguageModel:
    """A GGUF checkpoint shipped inside a PyPI package, de-quantised by transformers."""
    path = locate_package_file(package, file)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=_dtype(dtype)
    )
    return _boot(str(path.parent), hf_model, tokenizer, name)


def load_tiny_model(name: str, cache_dir: str, **settings: int) -> LanguageModel:
    """A small random model, built on first use and loaded like any local checkpoint."""
    directory = build_tiny_model(cache_dir, **settings)
    return load_hub_model(name, str(directory))
