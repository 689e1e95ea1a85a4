"""How many canonical contexts a run reads, from row counts alone (no activations, no randomness)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class Requirement(Protocol):
    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        """Canonical contexts needed, or None when `rows_per_context` ends first (the whole corpus)."""


@dataclass(frozen=True)
class StreamBudget:
    """What `n_batches` batches of an `ActivationStream` pull from the context stream.

    Replays the shuffle buffer's arithmetic on row counts, so the cache holds exactly the contexts
    the live stream would have consumed, including the one batch Lightning's loader fetches ahead
    (`margin_batches`). Each buffer refill emits ~buffer_tokens/2 tokens at once, so a larger
    margin can cost a whole refill of extra contexts; reading past the cache is still correct
    (the stream extends it).
    """

    n_batches: int
    batch_size: int
    buffer_tokens: int
    lm_batch_size: int
    margin_batches: int = 1

    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        target = self.n_batches + self.margin_batches
        group = in_group = pooled = emitted = 0
        for index, rows in enumerate(rows_per_context):
            group += rows
            in_group += 1
            if in_group < self.lm_batch_size:
                continue
            pooled += group
            group = in_group = 0
            if pooled < self.buffer_tokens:
                continue
            n_out = max(pooled // 2 // self.batch_size, 1) * self.batch_size
            emitted += math.ceil(n_out / self.batch_size)
            pooled -= n_out
            if emitted >= target:
                return index + 1
        return None


@dataclass(frozen=True)
class AtLeastContexts:
    """The first `n` contexts (what a stream that read past the cache asks for)."""

    n: int

    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        seen = 0
        for seen, _ in enumerate(rows_per_context, start=1):
            if seen >= self.n:
                return self.n
        return None
