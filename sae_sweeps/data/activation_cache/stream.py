"""`CachedActivationStream`: the live `ActivationStream`'s batches, read from the cache."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from itertools import count

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.activation_cache.budget import AtLeastContexts, Requirement
from sae_sweeps.data.activation_cache.builder import ActivationCache
from sae_sweeps.data.streams import resumable_shuffled_batches


class CachedActivationStream(IterableDataset):
    """`ActivationStream`'s batches, read from an activation cache instead of running the LM.

    Same LM-batch chunks (contexts 0, 1, ... in groups of lm_batch_size, repeating the corpus if
    the budget outruns it), same shuffle buffer, same seed: the same batches. `start_batch=N`
    starts at batch N; skipping is cheap (row counts come from the manifest).
    If the loader reads past what the cache holds, the cache is extended (under its lock).
    """

    def __init__(
        self,
        cache: ActivationCache,
        requirement: Requirement,
        batch_size: int,
        lm_batch_size: int,
        buffer_tokens: int,
        seed: int,
        start_batch: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cache = cache
        self.reader = cache.open(requirement)
        self.batch_size, self.lm_batch_size, self.buffer_tokens = batch_size, lm_batch_size, buffer_tokens
        self.seed = seed
        self.start_batch = int(start_batch)
        self.device = torch.device(device)

    def context_groups(self) -> Iterator[list[int]]:
        """Context indices of each LM batch, in stream order, endlessly."""
        group: list[int] = []
        for epoch in count():
            if epoch == 1:
                warnings.warn("the training budget exceeds the corpus: starting a second pass over it")
            index = 0
            while True:
                if index >= self.reader.n_contexts:
                    if self.reader.complete:
                        break
                    self.reader = self.cache.open(AtLeastContexts(self.reader.n_contexts * 2))
                    continue
                group.append(index)
                if len(group) == self.lm_batch_size:
                    yield group
                    group = []
                index += 1

    def load(self, contexts: list[int]) -> Tensor:
        return self.reader.read(contexts).to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return resumable_shuffled_batches(
            self.context_groups(), lambda group: self.reader.rows(group), self.load,
            self.buffer_tokens, self.batch_size, generator, self.start_batch,
        )
