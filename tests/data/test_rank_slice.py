"""Data parallelism: every rank reads the one global stream and trains on its contiguous share of
each batch, so R ranks together see exactly the batches of one process."""

from __future__ import annotations

import pytest
import torch

from sae_sweeps.data.streams import RankSlice

GLOBAL = [torch.arange(i * 12, (i + 1) * 12).reshape(12, 1).float() for i in range(5)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_the_ranks_slices_put_together_are_the_global_batches(world_size):
    per_rank = [list(RankSlice(GLOBAL, rank, world_size)) for rank in range(world_size)]
    for step, batch in enumerate(GLOBAL):
        assert torch.equal(torch.cat([slices[step] for slices in per_rank]), batch)


def test_a_batch_that_does_not_split_evenly_names_the_batch_size():
    with pytest.raises(ValueError, match=r"^train.batch_size: a batch of 12 does not split evenly over 5 processes$"):
        list(RankSlice(GLOBAL, 0, 5))
