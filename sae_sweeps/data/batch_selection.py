"""Which part of each global training batch this process trains on under data parallelism."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor
from torch.utils.data import IterableDataset


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
