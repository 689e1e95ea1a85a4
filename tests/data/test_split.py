"""The training / held-out split: whole documents for a corpus of many, every n-th context for a
corpus of fewer documents than `data.holdout_every` (one large .txt file), so both parts hold
text, never share a context, and come out the same every time."""

from __future__ import annotations

import torch
from cache_helpers import HOOK, small_data_cfg

from sae_sweeps.data.activation_cache import cache_key, cache_key_fields
from sae_sweeps.data.corpus import Corpus

HOLDOUT_EVERY = 5


def single_file_corpus(tmp_path, tiny_model) -> Corpus:
    path = tmp_path / "book.txt"
    if not path.exists():
        path.write_text(" ".join(f"Sentence number {i} of the only document." for i in range(400)))
    return Corpus(small_data_cfg(path=str(path), holdout_every=HOLDOUT_EVERY), tiny_model)


def test_one_large_text_file_splits_by_context_into_two_non_empty_deterministic_parts(tmp_path, tiny_model):
    corpus = single_file_corpus(tmp_path, tiny_model)
    assert corpus.split_by_context
    train = list(corpus.training_contexts()())
    held_out = list(corpus.contexts(held_out=True))
    assert train and held_out
    # every HOLDOUT_EVERY-th context is held out, the rest train: together they are the whole text once
    assert len(held_out) == -(-(len(train) + len(held_out)) // HOLDOUT_EVERY)
    train_set = {tuple(c.tolist()) for c in train}
    assert not any(tuple(c.tolist()) in train_set for c in held_out)
    again = single_file_corpus(tmp_path, tiny_model)
    assert all(torch.equal(a, b) for a, b in zip(train, again.training_contexts()(), strict=True))
    assert torch.equal(corpus.held_out_contexts(), again.held_out_contexts())


def test_a_corpus_of_many_documents_still_holds_out_whole_documents(small_data):
    assert not small_data.split_by_context


def test_the_context_split_gets_its_own_activation_cache_key(tmp_path, tiny_model):
    corpus = single_file_corpus(tmp_path, tiny_model)
    by_document = cache_key_fields(tiny_model, HOOK, corpus.cfg)
    by_context = cache_key_fields(tiny_model, HOOK, corpus.cfg, split_by_context=True)
    assert cache_key(by_document) != cache_key(by_context)
    assert corpus.activation_cache(HOOK, tmp_path).key == cache_key(by_context)
