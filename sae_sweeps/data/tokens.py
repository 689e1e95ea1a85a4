"""Fixed-length token contexts: documents joined by EOS, cut into windows that each start with BOS; or one
window per document, its beginning."""

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


def first_contexts(
    documents: Iterable[str], tokenizer, context_size: int, bos_token_id: int, tokenize_batch: int = 64
) -> Tensor:
    """LongTensor[N, context_size]: for each document BOS and its first context_size - 1 tokens, a short
    document padded at the end with BOS."""
    contexts: list[Tensor] = []
    docs = iter(documents)
    while chunk := list(islice(docs, tokenize_batch)):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            context = torch.full((context_size,), bos_token_id)
            body = ids[: context_size - 1]
            context[1 : 1 + len(body)] = torch.tensor(body, dtype=torch.long)
            contexts.append(context)
    return torch.stack(contexts) if contexts else torch.zeros(0, context_size, dtype=torch.long)


def batched(contexts: Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """Stack contexts into [batch_size, T] batches; a final short batch is dropped."""
    it = iter(contexts)
    while len(batch := list(islice(it, batch_size))) == batch_size:
        yield torch.stack(batch)
