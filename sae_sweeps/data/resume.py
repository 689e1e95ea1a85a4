"""Continuing a data stream where a preempted run stopped."""

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
