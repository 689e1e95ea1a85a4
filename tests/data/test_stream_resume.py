"""Resuming a stream at optimiser step N gives exactly the batches N, N+1, ... of the
uninterrupted stream: live activations, cached activations, and token contexts (e2e)."""

from __future__ import annotations

import pytest
import torch
from cache_helpers import BATCH, BUFFER, HOOK, LM_BATCH, assert_same_batches, take

from sae_sweeps.data.activation_cache import ActivationCache, CachedActivationStream, StreamBudget, cache_key_fields
from sae_sweeps.data.streams import ActivationStream, TokenStream, shuffled_batches

N_BATCHES = 40


@pytest.fixture(scope="module")
def uninterrupted(small_data, tiny_model):
    stream = ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=3)
    return take(stream, N_BATCHES)


def test_the_refactored_live_stream_equals_the_plain_shuffle_of_lm_chunks(small_data, tiny_model, uninterrupted):
    stream = ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=3)
    generator = torch.Generator().manual_seed(3)
    reference = take(shuffled_batches(map(stream.activations, stream.token_batches()), BUFFER, BATCH, generator), N_BATCHES)
    assert_same_batches(uninterrupted, reference)


@pytest.mark.parametrize("start", [1, 4, 17, 33])
def test_live_stream_resumed_at_batch_n_continues_the_uninterrupted_stream(small_data, tiny_model, uninterrupted, start):
    stream = ActivationStream(
        tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=3, start_batch=start
    )
    assert_same_batches(take(stream, N_BATCHES - start), uninterrupted[start:])


def counting(stream):
    calls = []
    original = stream.activations
    stream.activations = lambda tokens: calls.append(1) or original(tokens)
    return calls


def test_live_resume_runs_the_lm_only_on_chunks_still_in_the_buffer(small_data, tiny_model, uninterrupted):
    full = ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=3)
    full_calls = counting(full)
    expected = take(full, 151)[150:]
    resumed = ActivationStream(
        tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=3, start_batch=150
    )
    resumed_calls = counting(resumed)
    assert_same_batches(take(resumed, 1), expected)
    # rows of old LM batches have all left the buffer: those batches are not recomputed
    assert 0 < len(resumed_calls) < len(full_calls) / 2


@pytest.mark.parametrize("start", [1, 17, 33])
def test_cached_stream_resumed_at_batch_n_continues_the_uninterrupted_stream(
    small_data, tiny_model, uninterrupted, tmp_path, start
):
    fields = cache_key_fields(tiny_model, HOOK, small_data.cfg)
    cache = ActivationCache(tmp_path, fields, tiny_model, HOOK, small_data.training_contexts(), LM_BATCH, shard_bytes=100_000)
    budget = StreamBudget(N_BATCHES, BATCH, BUFFER, LM_BATCH)
    stream = CachedActivationStream(cache, budget, BATCH, LM_BATCH, BUFFER, seed=3, start_batch=start)
    assert_same_batches(take(stream, N_BATCHES - start), uninterrupted[start:])


def test_token_stream_resumed_at_batch_n_continues_the_uninterrupted_stream(small_data):
    full = take(TokenStream(small_data.training_contexts(), 4), 12)
    assert_same_batches(take(TokenStream(small_data.training_contexts(), 4, start_batch=5), 7), full[5:])


def test_training_stream_passes_start_batch_through(small_data, uninterrupted):
    resumed = small_data.activation_stream(HOOK, BATCH, 3, n_steps=22, start_batch=17)
    small_cfg_stream = take(resumed, 5)
    # Corpus uses the data config's lm_batch_size / buffer_tokens, which conftest sets to ours
    assert_same_batches(small_cfg_stream, uninterrupted[17:22])
    tokens = small_data.token_stream(4 * 32, start_batch=3)
    assert_same_batches(take(tokens, 2), take(TokenStream(small_data.training_contexts(), 4), 5)[3:])
