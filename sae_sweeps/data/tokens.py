"""Fixed-length token contexts: documents joined by EOS, cut into windows that each start with BOS."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import torch
from torch import Tensor


def pack_contexts(
    documents: Iterable[str],
    tokenizer,
    context_size: int,
    bos_token_id: int,
    eos_token_id: int | None,
    tokenize_batch: int = 64,
) -> Iterator[Tensor]:
    """Yield LongTensor[context_size] windows: BOS, then the next context_size - 1 stream tokens."""
    body = context_size - 1
    pending: list[int] = []
    docs = iter(documents)
    while chunk := list(islice(docs, tokenize_batch)):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            pending.extend(ids)
            if eos_token_id is not None:
                pending.append(eos_token_id)
        full = len(pending) // body
        for i in range(full):
            yield torch.tensor([bos_token_id, *pending[i * body : (i + 1) * body]])
        pending = pending[full * body :]


def batched(contexts: Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """Stack contexts into [batch_size, T] batches; a final short batch is dropped."""
    it = iter(contexts)
    while len(batch := list(islice(it, batch_size))) == batch_size:
        yield torch.stack(batch)
