"""The clean passes an e2e run shares (sae_sweeps/data/clean_passes.py): a step fed from them computes
the loss and gradients a live step does, and a second run on the same contexts runs no clean LM pass."""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

import pytest
import torch

from sae_sweeps.data.clean_passes import ContextBatch, compute_clean_passes
from sae_sweeps.data.corpus import Corpus
from sae_sweeps.data.streams import RankSlice
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.topk import TopKSAE

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from cache_helpers import HOOK, small_data_cfg  # noqa: E402

SCALE = 0.3


def no_dead(sae):
    return torch.zeros(sae.d_sae, dtype=torch.bool)


@pytest.mark.parametrize("loss_class", [E2ELoss, E2EDownstreamLoss])
def test_a_step_from_the_shared_passes_matches_a_live_step(small_lm, make_tokens, loss_class):
    """Same total (to float32 rounding: the unembedding alone is recomputed) and the same SAE gradients."""
    hook = HookPoint.parse("blocks.1.hook_resid_pre")
    loss = loss_class()
    loss.bind(small_lm, hook)
    tokens = make_tokens(small_lm, 4, 12)
    resid, unembed_input = compute_clean_passes(small_lm, hook, tokens, batch_contexts=4)
    results = []
    for batch in (tokens, ContextBatch(tokens, resid, unembed_input)):
        torch.manual_seed(0)
        sae = TopKSAE(16, 64, k=4)
        out = loss(sae, batch, SCALE, 0.0, no_dead(sae))
        out.total.backward()
        results.append((out, {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}))
    (live, live_grads), (shared, shared_grads) = results
    assert float(shared.terms["kl"]) == pytest.approx(float(live.terms["kl"]), rel=1e-5, abs=1e-7)
    assert float(shared.total.detach()) == pytest.approx(float(live.total.detach()), rel=1e-5, abs=1e-7)
    for name, grad in live_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-7)


def test_the_second_run_on_the_same_contexts_reads_the_passes_and_runs_no_clean_pass(tiny_model, tmp_path, monkeypatch):
    corpus = Corpus(small_data_cfg(), tiny_model, clean_pass_root=tmp_path)
    first = list(islice(corpus.context_stream(HOOK, 128, n_steps=5), 5))
    assert all(isinstance(b, ContextBatch) and b.tokens_BT.shape == (4, 32) for b in first)
    live_resid = tiny_model.residual_before(first[2].tokens_BT, HOOK.layer)
    torch.testing.assert_close(first[2].resid_BTD, live_resid, rtol=0, atol=1e-6)

    calls = []
    monkeypatch.setattr(tiny_model, "residual_before", lambda *a: calls.append(a))
    monkeypatch.setattr(tiny_model, "logits_from", lambda *a: calls.append(a))
    again = list(islice(Corpus(small_data_cfg(), tiny_model, clean_pass_root=tmp_path).context_stream(HOOK, 128, n_steps=5), 5))
    assert not calls
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in ((a.tokens_BT, b.tokens_BT), (a.resid_BTD, b.resid_BTD), (a.unembed_input_BTD, b.unembed_input_BTD)))


def test_a_resumed_stream_continues_with_the_same_batches_and_bare_tokens_after_the_budget(tiny_model, tmp_path):
    corpus = Corpus(small_data_cfg(), tiny_model, clean_pass_root=tmp_path)
    whole = list(islice(corpus.context_stream(HOOK, 128, n_steps=5), 7))
    resumed = list(islice(corpus.context_stream(HOOK, 128, n_steps=5, start_batch=3), 4))
    assert all(torch.equal(a.tokens_BT, b.tokens_BT) and torch.equal(a.resid_BTD, b.resid_BTD) for a, b in zip(whole[3:5], resumed[:2]))
    assert all(torch.equal(a, b) for a, b in zip(whole[5:], resumed[2:]))  # read-ahead past the budget: token ids
    bare = list(islice(corpus.token_stream(128), 7))
    assert all(torch.equal(a, b.tokens_BT if isinstance(b, ContextBatch) else b) for a, b in zip(bare, whole))


def test_data_parallel_ranks_take_contiguous_slices_of_a_context_batch():
    batch = ContextBatch(torch.arange(8).view(4, 2), torch.randn(4, 2, 3), torch.randn(4, 2, 3))
    slices = [next(iter(RankSlice([batch], rank, 2))) for rank in range(2)]
    assert [len(s) for s in slices] == [2, 2]
    assert torch.equal(torch.cat([s.resid_BTD for s in slices]), batch.resid_BTD)
    assert torch.equal(slices[1].tokens_BT, batch.tokens_BT[2:])
