"""Training batches for the two kinds of loss: activation vectors (local) and token contexts (e2e).

Both are endless, deterministic for a seed, and split across data-parallel ranks by context, so
rank r of R sees contexts r, r+R, r+2R, ... of the same document order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from itertools import count, islice

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.tokens import batched
from sae_sweeps.models import HookPoint, LanguageModel

ContextSource = Callable[[], Iterator[Tensor]]
"""Starts a fresh pass over the training contexts (one epoch)."""


def endless_contexts(source: ContextSource, rank: int = 0, world_size: int = 1) -> Iterator[Tensor]:
    """Repeat the corpus when a budget outruns it, warning once so nobody mistakes it for new data."""
    for epoch in count():
        if epoch == 1:
            warnings.warn("the training budget exceeds the corpus: starting a second pass over it")
        n_seen = 0
        for n_seen, context in enumerate(islice(source(), rank, None, world_size), start=1):
            yield context
        if n_seen == 0:
            raise ValueError("the training data produced no full context; use more text or a shorter data.context_size")


def shuffled_batches(
    chunks_ND: Iterator[Tensor], buffer_tokens: int, batch_size: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """Mix activations from many contexts before batching: neighbouring tokens are correlated.

    Fill a buffer, shuffle it, emit half of it as batches and keep the other half to mix with
    the next refill, so every batch draws on several buffers' worth of contexts.
    """
    pool: list[Tensor] = []
    pooled = 0
    for chunk in chunks_ND:
        pool.append(chunk)
        pooled += len(chunk)
        if pooled < buffer_tokens:
            continue
        data = torch.cat(pool)
        data = data[torch.randperm(len(data), generator=generator, device="cpu").to(data.device)]
        n_out = max(len(data) // 2 // batch_size, 1) * batch_size
        for start in range(0, n_out, batch_size):
            yield data[start : start + batch_size]
        pool, pooled = [data[n_out:]], len(data) - n_out


class ActivationStream(IterableDataset):
    """Shuffled [batch_size, d_in] activation batches at a hook point, special tokens removed."""

    def __init__(
        self,
        model: LanguageModel,
        hook: HookPoint,
        contexts: ContextSource,
        batch_size: int,
        lm_batch_size: int,
        buffer_tokens: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.hook, self.contexts = model, hook, contexts
        self.batch_size, self.lm_batch_size, self.buffer_tokens = batch_size, lm_batch_size, buffer_tokens
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def activation_chunks(self) -> Iterator[Tensor]:
        device = self.model.device
        for tokens_BT in batched(endless_contexts(self.contexts, self.rank, self.world_size), self.lm_batch_size):
            tokens_BT = tokens_BT.to(device)
            acts_BTD = self.model.activations_at(tokens_BT, self.hook)
            yield acts_BTD[~self.model.special_token_mask(tokens_BT)].clone()

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed + self.rank)
        return shuffled_batches(self.activation_chunks(), self.buffer_tokens, self.batch_size, generator)


class TokenStream(IterableDataset):
    """[contexts_per_batch, T] token batches for losses that run the model themselves (e2e)."""

    def __init__(self, contexts: ContextSource, contexts_per_batch: int, rank: int = 0, world_size: int = 1) -> None:
        self.contexts, self.contexts_per_batch = contexts, contexts_per_batch
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[Tensor]:
        return batched(endless_contexts(self.contexts, self.rank, self.world_size), self.contexts_per_batch)
