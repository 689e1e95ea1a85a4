"""The reference passes (sae_sweeps/evaluation/reference_passes.py): the evaluator built on them
gives the metrics of whole forward passes, and on disk they are computed once, keyed by what they
depend on, and recomputed when a file is damaged."""

import pytest
import torch

import sae_sweeps.evaluation.reference_passes as reference_passes
from sae_sweeps.evaluation.evaluator import Evaluator
from sae_sweeps.evaluation.reference_passes import cached_reference_passes, compute_reference_passes, reference_passes_key
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.splicing import SpliceHook, next_token_log_probs, next_token_mask, zero_ablate

HOOK = HookPoint.parse("blocks.1.hook_resid_pre")


@pytest.fixture
def contexts_NT(tiny_model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    contexts_NT = torch.randint(0, tiny_model.vocab_size, (5, 16), generator=generator)
    contexts_NT[:, 0] = tiny_model.bos_token_id
    return contexts_NT


def mean_over_predictions(values_BT: torch.Tensor, predict_BT: torch.Tensor) -> float:
    return float(values_BT[predict_BT].double().mean())


def test_the_evaluator_on_reference_passes_gives_the_metrics_of_whole_forward_passes(tiny_model, contexts_NT):
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=64, d_sae=128).eval()
    reference = compute_reference_passes(tiny_model, HOOK, contexts_NT, batch_contexts=2)
    metrics = Evaluator(tiny_model, HOOK, contexts_NT, reference, batch_contexts=2).evaluate(sae, input_scale=0.5)

    # Independently: every pass from the tokens, all contexts in one batch.
    ordinary_BT = ~tiny_model.special_token_mask(contexts_NT)
    targets_BT, predict_BT = contexts_NT[:, 1:], next_token_mask(ordinary_BT)
    with torch.no_grad():
        clean = next_token_log_probs(tiny_model.bridge(contexts_NT))
        spliced = next_token_log_probs(tiny_model.bridge.run_with_hooks(
            contexts_NT, fwd_hooks=SpliceHook(sae, HOOK, ordinary_BT, 0.5).hooks()))
        zeroed = next_token_log_probs(tiny_model.bridge.run_with_hooks(
            contexts_NT, fwd_hooks=[(HOOK.name, lambda acts, hook: zero_ablate(acts, ordinary_BT))]))
    ce = {name: mean_over_predictions(-lp.gather(-1, targets_BT.unsqueeze(-1)).squeeze(-1), predict_BT)
          for name, lp in (("clean", clean), ("sae", spliced), ("zero", zeroed))}
    kl = mean_over_predictions((clean.exp() * (clean - spliced)).sum(-1), predict_BT)
    assert metrics.ce_loss_clean == pytest.approx(ce["clean"], abs=1e-6)
    assert metrics.ce_loss_sae == pytest.approx(ce["sae"], abs=1e-6)
    assert metrics.ce_loss_zero_ablation == pytest.approx(ce["zero"], abs=1e-6)
    assert metrics.kl == pytest.approx(kl, abs=1e-6)


def test_reference_passes_are_computed_once_on_disk_and_recomputed_when_damaged(tiny_model, contexts_NT, tmp_path, monkeypatch):
    fields = {"model": "tiny", "hook": HOOK.name}  # stands in for the activation cache's fields
    key = reference_passes_key(fields, contexts_NT, batch_contexts=2)
    first = cached_reference_passes(tmp_path, key, tiny_model, HOOK, contexts_NT, 2)
    (directory,) = tmp_path.iterdir()

    def must_not_compute(*args):
        raise AssertionError("computed again although the cache holds them")

    with monkeypatch.context() as patch:
        patch.setattr(reference_passes, "compute_reference_passes", must_not_compute)
        again = cached_reference_passes(tmp_path, key, tiny_model, HOOK, contexts_NT, 2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))

    # Other held-out tokens, another batch size: other keys.
    other_contexts = contexts_NT.clone()
    other_contexts[0, 3] += 1
    assert reference_passes_key(fields, other_contexts, 2) != key != reference_passes_key(fields, contexts_NT, 4)

    resid_file = directory / "resid_NTD.npy"
    data = bytearray(resid_file.read_bytes())
    data[-1] ^= 0xFF
    resid_file.write_bytes(bytes(data))
    repaired = cached_reference_passes(tmp_path, key, tiny_model, HOOK, contexts_NT, 2)
    assert torch.equal(repaired.resid_NTD, first.resid_NTD)


def test_the_first_contexts_of_reference_passes_are_the_passes_of_the_first_contexts(tiny_model, contexts_NT):
    whole = compute_reference_passes(tiny_model, HOOK, contexts_NT, batch_contexts=5)
    first_two = compute_reference_passes(tiny_model, HOOK, contexts_NT[:2], batch_contexts=5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.first(2), first_two))


def test_the_kl_from_the_clean_moments_equals_the_kl_from_the_clean_logits(tiny_model, contexts_NT, monkeypatch):
    """The affine route (reference_passes.py: kl_offset - h . A^T p + logsumexp z(h)) against the
    route a soft-capped model takes, which unembeds the clean pass again."""
    torch.manual_seed(1)
    sae = ReLUSAE(d_in=64, d_sae=128).eval()
    with_moments = compute_reference_passes(tiny_model, HOOK, contexts_NT, batch_contexts=2)
    assert with_moments.has_clean_moments
    assert with_moments.clean_mean_unembedding_NTD.shape == with_moments.resid_NTD.shape
    assert with_moments.unembed_input_NTD.numel() == 0  # the route that reads it is the soft cap's
    with monkeypatch.context() as patch:
        patch.setattr(type(tiny_model), "logits_affine_in_unembed_input", property(lambda model: False))
        without = compute_reference_passes(tiny_model, HOOK, contexts_NT, batch_contexts=2)
        assert not without.has_clean_moments
        assert without.unembed_input_NTD.shape == without.resid_NTD.shape
        from_logits = Evaluator(tiny_model, HOOK, contexts_NT, without, batch_contexts=2).evaluate(sae, input_scale=0.5)
    from_moments = Evaluator(tiny_model, HOOK, contexts_NT, with_moments, batch_contexts=2).evaluate(sae, input_scale=0.5)
    assert from_moments.kl == pytest.approx(from_logits.kl, abs=1e-6)
    assert from_moments.kl > 1e-3  # an SAE at initialisation changes the predictions (KL 0.007 here)
    assert from_moments.ce_loss_sae == pytest.approx(from_logits.ce_loss_sae, abs=1e-6)
    assert from_moments.standard_errors["kl"] == pytest.approx(from_logits.standard_errors["kl"], abs=1e-6)
    # With the clean model's own unembedding input, the KL is zero.
    resid = without.unembed_input_NTD
    offset = with_moments.clean_kl_offset_NT
    with torch.no_grad():
        logsumexp = tiny_model.unembed(resid).float().logsumexp(-1).double()
    self_kl = offset - (resid.double() * with_moments.clean_mean_unembedding_NTD.double()).sum(-1) + logsumexp
    assert self_kl.abs().max() < 1e-5
