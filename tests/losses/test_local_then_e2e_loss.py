"""local_then_e2e's objective on a tiny random LM: the local phase is the local loss, and the fine-tune's
balance keeps the fidelity term at the local loss's size at the switch, then holds."""

from __future__ import annotations

import pytest
import torch

from sae_sweeps.losses.base import reconstruction_error
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.losses.local_then_e2e import LocalThenE2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.topk import TopKSAE
from sae_sweeps.splicing import SpliceHook

HOOK = HookPoint.parse("blocks.1.hook_resid_pre")
SCALE = 0.3


def topk_sae(seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    return TopKSAE(16, 64, k=4)


def no_dead(sae) -> torch.Tensor:
    return torch.zeros(sae.d_sae, dtype=torch.bool)


def hook_mse(model, sae, tokens) -> float:
    """||s x - x_hat||^2 on the ordinary tokens of `tokens`, by splicing once without the loss."""
    ordinary = ~model.special_token_mask(tokens)
    splice_hook = SpliceHook(sae, HOOK, ordinary, SCALE)
    with torch.no_grad():
        model.bridge.run_with_hooks(tokens, fwd_hooks=splice_hook.hooks())
    splice = splice_hook.splice
    return float(reconstruction_error(splice.target_ND, splice.output.reconstruction_BD))


def test_activation_batches_get_exactly_the_local_loss(small_lm):
    loss = LocalThenE2ELoss()
    loss.bind(small_lm, HOOK)
    sae, rows = topk_sae(), torch.randn(32, 16)
    ours = loss(sae, rows, SCALE, 0.1, no_dead(sae))
    local = LocalLoss()(sae, rows, SCALE, 0.1, no_dead(sae))
    assert loss.phase_of(rows) == "local"
    assert torch.equal(ours.total, local.total) and ours.terms.keys() == local.terms.keys()
    assert loss.balance is None  # the balance is measured on the first fine-tune batch, not before


@pytest.mark.parametrize("kl_weight", [0.5, 0.8])
def test_at_the_switch_the_fidelity_equals_the_local_mse_and_the_balance_then_holds(small_lm, make_tokens, kl_weight):
    """First fine-tune batch: (1 - w) * MSE + w * lambda * KL == MSE with lambda = MSE / KL. Later batches
    keep that lambda: their KL term is w * lambda * (the plain e2e loss's KL term)."""
    loss = LocalThenE2ELoss(kl_weight=kl_weight, kl_coefficient=2.0)
    loss.bind(small_lm, HOOK)
    plain = E2ELoss(kl_coefficient=2.0)
    plain.bind(small_lm, HOOK)
    sae = topk_sae()
    first, second = make_tokens(small_lm, 2, 12, seed=0), make_tokens(small_lm, 2, 12, seed=1)
    assert loss.phase_of(first) == "e2e"

    out = loss(sae, first, SCALE, 0.0, no_dead(sae))
    mse, kl = hook_mse(small_lm, sae, first), float(plain(sae, first, SCALE, 0.0, no_dead(sae)).terms["kl"])
    assert loss.balance == pytest.approx(mse / kl, rel=1e-5)
    assert float(out.terms["reconstruction"]) == pytest.approx((1 - kl_weight) * mse, rel=1e-5)
    assert float(out.terms["reconstruction"] + out.terms["kl"]) == pytest.approx(mse, rel=1e-5)

    balance = loss.balance
    out = loss(sae, second, SCALE, 0.0, no_dead(sae))
    assert loss.balance == balance
    kl_second = float(plain(sae, second, SCALE, 0.0, no_dead(sae)).terms["kl"])
    assert float(out.terms["kl"]) == pytest.approx(kl_weight * balance * kl_second, rel=1e-5)
    assert float(out.terms["reconstruction"]) == pytest.approx((1 - kl_weight) * hook_mse(small_lm, sae, second), rel=1e-5)


def test_the_balance_travels_in_the_state_a_checkpoint_keeps(small_lm, make_tokens):
    loss = LocalThenE2ELoss()
    loss.bind(small_lm, HOOK)
    sae = topk_sae()
    loss(sae, make_tokens(small_lm), SCALE, 0.0, no_dead(sae))
    resumed = LocalThenE2ELoss()
    resumed.load_state_dict(loss.state_dict())
    assert resumed.balance == loss.balance is not None


def test_the_downstream_fine_tune_balances_its_whole_e2e_fidelity(small_lm, make_tokens):
    """finetune=e2e_ds: lambda scales KL and the downstream term together, so both add up to w * MSE at the switch."""
    loss = LocalThenE2ELoss(finetune="e2e_ds", kl_weight=0.5, beta=3.0)
    loss.bind(small_lm, HOOK)
    assert isinstance(loss.finetune, E2EDownstreamLoss) and loss.finetune.beta == 3.0
    sae, tokens = topk_sae(), make_tokens(small_lm)
    out = loss(sae, tokens, SCALE, 0.0, no_dead(sae))
    mse = hook_mse(small_lm, sae, tokens)
    assert float(out.terms["kl"] + out.terms["downstream"]) == pytest.approx(0.5 * mse, rel=1e-5)
