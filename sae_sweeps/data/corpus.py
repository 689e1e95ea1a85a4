"""`Corpus`: everything a run needs from the data config: training contexts, held-out contexts,
the sample that sets the input scale, and the batch stream the loss asks for."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from sae_sweeps.console import cache_build_bar
from sae_sweeps.data import text
from sae_sweeps.data.activation_cache import ActivationCache, CachedActivationStream, StreamBudget, cache_key_fields
from sae_sweeps.data.clean_passes import CleanPassStream
from sae_sweeps.data.streams import ActivationStream, ContextSource, TokenStream
from sae_sweeps.data.tokens import first_contexts, pack_contexts
from sae_sweeps.models import HookPoint, LanguageModel


class Corpus:
    """One corpus cut into training and held-out token contexts, in one seeded document order,
    and the training streams over it (one global stream: data-parallel ranks slice it)."""

    def __init__(
        self,
        data: DictConfig,
        model: LanguageModel,
        activation_cache_root: Path | None = None,
        model_hf_name: str | None = None,
        clean_pass_root: Path | None = None,
    ) -> None:
        self.cfg, self.model = data, model
        self.dataset = text.load_text_dataset(data)
        self.split_by_context = text.splits_by_context(self.dataset, data.holdout_every)
        self.activation_cache_root = activation_cache_root
        """Where activation streams read the shared on-disk cache (run_config.activation_cache_root); None: live LM."""
        self.model_hf_name = model_hf_name
        """The model's hub name, part of the cache key."""
        self.clean_pass_root = clean_pass_root
        """Where context streams read the clean LM's passes over their contexts (run_config.clean_pass_root); None: bare tokens."""

    def contexts(self, held_out: bool) -> Iterator[Tensor]:
        """The held-out or the training contexts: whole documents apart, or for a corpus of few
        documents, every `holdout_every`-th context apart (text.splits_by_context)."""
        seed, every = self.cfg.shuffle_seed, self.cfg.holdout_every
        if self.split_by_context:
            documents = text.non_blank(text.shuffled_documents(self.dataset, seed))
            return text.holdout_part(self._pack(documents), every, held_out)
        return self._pack(text.iter_documents(self.dataset, seed, held_out, every))

    def _pack(self, documents: Iterable[str]) -> Iterator[Tensor]:
        return pack_contexts(
            documents, self.model.tokenizer, self.cfg.context_size, self.model.bos_token_id, self.model.eos_token_id
        )

    @property
    def has_labels(self) -> bool:
        """Whether its documents carry labels (text.py: topic folders, a `label` field in json records)."""
        return text.has_labels(self.dataset)

    def labelled_documents(self, held_out: bool) -> Iterator[tuple[str, str]]:
        """(text, label) of the labelled held-out or training documents, in the order `contexts` reads
        them; only for a corpus split by document (not `split_by_context`) that has labels."""
        if self.split_by_context or not self.has_labels:
            raise ValueError("labelled documents need a corpus with labels that is split by document")
        return text.labelled_documents(self.dataset, self.cfg.shuffle_seed, held_out, self.cfg.holdout_every)

    def first_contexts(self, documents: Iterable[str]) -> Tensor:
        """[N, context_size]: each document's first context, BOS first, padded after a short document's
        end with BOS (a special token, so no metric reads the padding)."""
        return first_contexts(documents, self.model.tokenizer, self.cfg.context_size, self.model.bos_token_id)

    def training_contexts(self) -> ContextSource:
        return partial(self.contexts, held_out=False)

    def held_out_contexts(self) -> Tensor:
        contexts = list(islice(self.contexts(held_out=True), self.cfg.eval_contexts))
        if not contexts:
            raise ValueError("data: the held-out text holds no full context; use more text or a shorter data.context_size")
        return torch.stack(contexts)

    def sample_activations(self, hook: HookPoint) -> Tensor:
        """Ordinary-token activation rows (a transcoder's input and output side by side) from the first
        training contexts (to set the scales and b_dec)."""
        tokens_BT = torch.stack(list(islice(self.training_contexts()(), self.cfg.scale_sample_contexts)))
        tokens_BT = tokens_BT.to(self.model.device)
        acts_BTD = self.model.activations_at(tokens_BT, hook)
        return acts_BTD[~self.model.special_token_mask(tokens_BT)].float().clone()

    def token_stream(self, batch_tokens: int, start_batch: int = 0, first_context: int = 0) -> TokenStream:
        """Batches of whole training contexts (losses that run the LM themselves), from optimiser step
        `start_batch` on; the first batch begins at training context `first_context`."""
        return TokenStream(self.training_contexts(), self.contexts_per_batch(batch_tokens), start_batch, first_context)

    def context_stream(
        self, hook: HookPoint, batch_tokens: int, n_steps: int, start_batch: int = 0, first_context: int = 0
    ) -> IterableDataset:
        """`token_stream`'s batches for a run of `n_steps` end-to-end steps; with a clean-pass cache, each batch
        a `ContextBatch` that carries the clean LM's passes over its contexts, shared by every run on them
        (data/clean_passes.py)."""
        if self.clean_pass_root is None:
            return self.token_stream(batch_tokens, start_batch, first_context)
        return CleanPassStream(
            self.model, hook, self.training_contexts(), self.contexts_per_batch(batch_tokens), n_steps,
            self.clean_pass_root, self.cache_fields(hook), start_batch, first_context,
        )

    def contexts_read_by_activation_stream(self, batch_tokens: int, n_steps: int) -> int:
        """How many training contexts `activation_stream` reads for `n_steps` batches (their rows fill
        the shuffle buffer; counted from the tokens alone, without the LM); 0 when it reads the whole corpus."""
        budget = StreamBudget(n_steps, batch_tokens, self.cfg.buffer_tokens, self.cfg.lm_batch_size, margin_batches=0)
        rows = (int((~self.model.special_token_mask(context)).sum()) for context in self.training_contexts()())
        return budget.contexts_needed(rows) or 0

    def activation_stream(
        self, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> IterableDataset:
        """Shuffled activation rows at `hook` (a transcoder's input and output side by side) for an
        `n_steps`-step run, from optimiser step `start_batch` on (a resumed run gets exactly the batches
        the uninterrupted run would have had): from the activation cache when the corpus has one (one
        LM pass for every run that needs the same activations), else from the live LM."""
        if self.activation_cache_root is not None:
            return self.cached_stream(hook, batch_tokens, seed, n_steps, start_batch)
        return ActivationStream(
            self.model, hook, self.training_contexts(), batch_tokens, self.cfg.lm_batch_size,
            self.cfg.buffer_tokens, seed, start_batch,
        )

    def cache_fields(self, hook: HookPoint) -> dict[str, Any]:
        """What determines this corpus's activations at `hook`: the key of every cache built from it."""
        return cache_key_fields(
            self.model, hook, self.cfg, str(self.cfg.get("activation_cache_dtype") or "float32"), self.model_hf_name,
            self.split_by_context,
        )

    def activation_cache(self, hook: HookPoint, root: str | Path) -> ActivationCache:
        return ActivationCache(
            root, self.cache_fields(hook), self.model, hook, self.training_contexts(), self.cfg.lm_batch_size, progress=cache_build_bar
        )

    def cached_stream(
        self, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> CachedActivationStream:
        assert self.activation_cache_root is not None
        cache = self.activation_cache(hook, self.activation_cache_root)
        budget = StreamBudget(n_steps, batch_tokens, self.cfg.buffer_tokens, self.cfg.lm_batch_size)
        return CachedActivationStream(
            cache, budget, batch_tokens, self.cfg.lm_batch_size, self.cfg.buffer_tokens, seed, start_batch,
            device=self.model.device,
        )

    def contexts_per_batch(self, batch_tokens: int) -> int:
        return max(1, batch_tokens // self.cfg.context_size)

    def token_steps(self, tokens: int, batch_tokens: int) -> int:
        """Optimiser steps of `token_stream` batches that train on `tokens` tokens (whole contexts count)."""
        return max(1, math.ceil(tokens / (self.contexts_per_batch(batch_tokens) * self.cfg.context_size)))


def input_scale_for(sample_ND: Tensor, target_mean_squared_norm: float) -> float:
    """The scalar s with E||s x||^2 = target, so coefficients mean the same at every hook and model."""
    return math.sqrt(target_mean_squared_norm / sample_ND.pow(2).sum(dim=-1).mean().item())


def loader(stream: IterableDataset) -> DataLoader:
    # The stream runs the LM itself, in this process, on the model's device: no workers, no collation.
    return DataLoader(stream, batch_size=None, num_workers=0)
