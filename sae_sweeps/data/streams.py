"""Training batches for the two kinds of loss: activation vectors (local) and token contexts (e2e).

Both are endless and deterministic for a seed. Under data parallelism every rank builds the same
global stream and `RankSlice` hands it its share of each batch, so R processes train on exactly
the batches one process would.

Both can start at optimiser-step index N (`start_batch=N`, for preempted runs that resume) and
then produce exactly the batches N, N+1, ... that an uninterrupted stream would have produced.
Activation batches depend on everything that went through the shuffle buffer before them, so a
resumed stream first replays the buffer with row *indices* instead of activations (the same
random permutations: they depend only on lengths), then computes the activations of only the
rows still in the buffer at batch N. Row counts come from the tokens alone (special tokens are
known without running the LM), so the replay costs tokenisation, not LM passes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from itertools import count, islice
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.tokens import batched
from sae_sweeps.models import HookPoint, LanguageModel

ContextSource = Callable[[], Iterator[Tensor]]
"""Starts a fresh pass over the training contexts (one epoch)."""

Chunk = TypeVar("Chunk")
"""What one LM batch is before it becomes activations: token ids (live) or context indices (cache)."""


def endless_contexts(source: ContextSource) -> Iterator[Tensor]:
    """Repeat the corpus when a budget outruns it, warning once so nobody mistakes it for new data."""
    for epoch in count():
        if epoch == 1:
            warnings.warn("the training budget exceeds the corpus: starting a second pass over it")
        n_seen = 0
        for n_seen, context in enumerate(source(), start=1):
            yield context
        if n_seen == 0:
            raise ValueError("the training data produced no full context; use more text or a shorter data.context_size")


def shuffle_refills(
    chunks_ND: Iterable[Tensor],
    buffer_tokens: int,
    batch_size: int,
    generator: torch.Generator,
    pool: list[Tensor] | None = None,
) -> Iterator[tuple[Tensor, int]]:
    """The shuffle buffer's refills: (shuffled pool, n_out); rows [:n_out] become batches and the
    rest stays in the pool for the next refill. Works on activations and on row indices alike:
    the permutations depend only on the pool's length."""
    pool = list(pool or [])
    pooled = sum(len(p) for p in pool)
    for chunk in chunks_ND:
        pool.append(chunk)
        pooled += len(chunk)
        if pooled < buffer_tokens:
            continue
        data = torch.cat(pool)
        data = data[torch.randperm(len(data), generator=generator, device="cpu").to(data.device)]
        n_out = max(len(data) // 2 // batch_size, 1) * batch_size
        yield data, n_out
        pool, pooled = [data[n_out:]], len(data) - n_out


def shuffled_batches(
    chunks_ND: Iterable[Tensor],
    buffer_tokens: int,
    batch_size: int,
    generator: torch.Generator,
    pool: list[Tensor] | None = None,
) -> Iterator[Tensor]:
    """Mix activations from many contexts before batching: neighbouring tokens are correlated.

    Fill a buffer, shuffle it, emit half of it as batches and keep the other half to mix with
    the next refill, so every batch draws on several buffers' worth of contexts.
    """
    for data, n_out in shuffle_refills(chunks_ND, buffer_tokens, batch_size, generator, pool):
        for start in range(0, n_out, batch_size):
            yield data[start : start + batch_size]


def resumable_shuffled_batches(
    chunks: Iterable[Chunk],
    rows_of: Callable[[Chunk], int],
    load: Callable[[Chunk], Tensor],
    buffer_tokens: int,
    batch_size: int,
    generator: torch.Generator,
    start_batch: int = 0,
) -> Iterator[Tensor]:
    """`shuffled_batches(map(load, chunks), ...)` from batch index `start_batch` on.

    `rows_of(chunk)` must equal `len(load(chunk))` and be cheap: the batches before
    `start_batch` are replayed on row indices, and only the chunks that still have rows in the
    buffer at `start_batch` are loaded (each once).
    """
    chunks = iter(chunks)
    if start_batch <= 0:
        yield from shuffled_batches(map(load, chunks), buffer_tokens, batch_size, generator)
        return

    kept: dict[int, Chunk] = {}  # chunks whose rows may still be in the buffer
    first_row: list[int] = []  # row id of each chunk's first row

    def row_ids() -> Iterator[Tensor]:
        total = 0
        for index, chunk in enumerate(chunks):
            n = rows_of(chunk)
            kept[index] = chunk
            first_row.append(total)
            yield torch.arange(total, total + n)
            total += n

    emitted = 0
    for ids, n_out in shuffle_refills(row_ids(), buffer_tokens, batch_size, generator):
        n_batches = math.ceil(n_out / batch_size)
        if emitted + n_batches > start_batch:
            break
        emitted += n_batches
        # forget chunks none of whose rows survive in the pool
        starts = torch.tensor(first_row)
        alive = set(torch.unique(torch.searchsorted(starts, ids[n_out:], right=True) - 1).tolist())
        for index in [i for i in kept if i not in alive]:
            del kept[index]
    else:  # the chunks ran out before batch `start_batch`
        return

    # Activations of the rows in the current (shuffled) pool, one load per chunk they come from.
    starts = torch.tensor(first_row)
    chunk_of = torch.searchsorted(starts, ids, right=True) - 1
    order = torch.argsort(chunk_of, stable=True)
    sorted_chunks = chunk_of[order]
    boundaries = torch.searchsorted(sorted_chunks, torch.unique(sorted_chunks))
    data: Tensor | None = None
    for n, b in enumerate(boundaries.tolist()):
        end = boundaries[n + 1].item() if n + 1 < len(boundaries) else len(order)
        positions = order[b:end]
        index = sorted_chunks[b].item()
        acts = load(kept[index])
        if data is None:
            data = acts.new_empty((len(ids), *acts.shape[1:]))
        local = (ids[positions] - first_row[index]).to(acts.device)
        data[positions.to(acts.device)] = acts[local]
    assert data is not None
    kept.clear()
    for start in range((start_batch - emitted) * batch_size, n_out, batch_size):
        yield data[start : start + batch_size]
    yield from shuffled_batches(map(load, chunks), buffer_tokens, batch_size, generator, pool=[data[n_out:]])


class ActivationStream(IterableDataset):
    """Shuffled [batch_size, d_in] activation batches at a hook point, special tokens removed.

    `start_batch=N` starts at the N-th batch of the uninterrupted stream (see the module doc).
    """

    def __init__(
        self,
        model: LanguageModel,
        hook: HookPoint,
        contexts: ContextSource,
        batch_size: int,
        lm_batch_size: int,
        buffer_tokens: int,
        seed: int,
        start_batch: int = 0,
    ) -> None:
        self.model, self.hook, self.contexts = model, hook, contexts
        self.batch_size, self.lm_batch_size, self.buffer_tokens = batch_size, lm_batch_size, buffer_tokens
        self.seed = seed
        self.start_batch = int(start_batch)

    def token_batches(self) -> Iterator[Tensor]:
        """The [lm_batch_size, T] token batches the LM runs on, in stream order."""
        return batched(endless_contexts(self.contexts), self.lm_batch_size)

    def ordinary_rows(self, tokens_BT: Tensor) -> int:
        return int((~self.model.special_token_mask(tokens_BT)).sum())

    def activations(self, tokens_BT: Tensor) -> Tensor:
        """[rows, d_in] activations of one LM batch's ordinary tokens, context by context."""
        tokens_BT = tokens_BT.to(self.model.device)
        acts_BTD = self.model.activations_at(tokens_BT, self.hook)
        return acts_BTD[~self.model.special_token_mask(tokens_BT)].clone()

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return resumable_shuffled_batches(
            self.token_batches(), self.ordinary_rows, self.activations,
            self.buffer_tokens, self.batch_size, generator, self.start_batch,
        )


class TokenStream(IterableDataset):
    """[contexts_per_batch, T] token batches for losses that run the model themselves (e2e).

    `start_batch=N` skips the first N batches (tokenisation only); the first batch begins at context
    `first_context` of the corpus.
    """

    def __init__(self, contexts: ContextSource, contexts_per_batch: int, start_batch: int = 0, first_context: int = 0) -> None:
        self.contexts, self.contexts_per_batch = contexts, contexts_per_batch
        self.start_batch, self.first_context = int(start_batch), int(first_context)

    def __iter__(self) -> Iterator[Tensor]:
        contexts = islice(endless_contexts(self.contexts), self.first_context, None)
        return islice(batched(contexts, self.contexts_per_batch), self.start_batch, None)


class RankSlice(IterableDataset):
    """Rank r's contiguous 1/R of every global batch.

    Every rank reads the same global stream, so R data-parallel processes together train on
    exactly the batches one process would: with gradients averaged over equal slices, they take
    the same steps (up to floating-point summation order).
    """

    def __init__(self, stream: IterableDataset, rank: int, world_size: int) -> None:
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def __iter__(self) -> Iterator[Tensor]:
        for batch in self.stream:
            if len(batch) % self.world_size:
                raise ValueError(
                    f"train.batch_size: a batch of {len(batch)} does not split evenly over {self.world_size} processes"
                )
            yield batch.chunk(self.world_size)[self.rank]
