"""Which batches of the global training stream this process trains on: from where a preempted
run stopped, and its own slice of each batch under data parallelism."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from torch import Tensor
from torch.utils.data import IterableDataset


class SkipBatches(IterableDataset):
    """The batches of `stream` from index `start` on: exactly those an uninterrupted run would
    see next, because every stream is deterministic for its seed."""

    def __init__(self, stream: IterableDataset, start: int) -> None:
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[Tensor]:
        return islice(iter(self.stream), self.start, None)


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
