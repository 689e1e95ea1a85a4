"""An architecture whose budget is shared across a batch's tokens (BatchTopK, Matryoshka) needs the local
reconstruction error whatever the loss: a loss whose fidelity term gives it weight s adds
auxiliary_weight * (w_local - s) * ||x - x_hat||^2, computed on the same forward pass; architectures
with a per-token code (w_local = 0) get nothing added."""

from __future__ import annotations

import pytest
import torch

from sae_sweeps.losses.base import architecture_terms, reconstruction_error
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.losses.local_then_e2e import LocalThenE2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.batchtopk import BatchTopKSAE
from sae_sweeps.saes.matryoshka import MatryoshkaSAE
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.topk import TopKSAE

HOOK = HookPoint.parse("blocks.1.hook_resid_pre")
SCALE = 0.3
NO_DEAD = torch.zeros(64, dtype=torch.bool)


@pytest.mark.parametrize("local_share", [0.0, 0.25, 1.0])
def test_the_missing_share_of_the_local_error_is_added_times_the_auxiliary_weight(local_share):
    torch.manual_seed(0)
    x_ND = torch.randn(40, 16)
    sae = BatchTopKSAE(16, 64, k=4)
    with torch.no_grad():
        out = sae(x_ND)
        terms = architecture_terms(sae, x_ND, out, 0.0, NO_DEAD, 7.5, local_share=local_share)
    if local_share >= 1:
        assert "local_reconstruction" not in terms
    else:
        expected = 7.5 * (1 - local_share) * reconstruction_error(x_ND, out.reconstruction_BD)
        assert float(terms["local_reconstruction"]) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("sae_class", [TopKSAE, ReLUSAE])
def test_a_per_token_code_gets_no_local_term_under_any_loss(sae_class):
    torch.manual_seed(0)
    x_ND = torch.randn(40, 16)
    sae = sae_class(16, 64, k=4) if sae_class is TopKSAE else sae_class(16, 64)
    with torch.no_grad():
        terms = architecture_terms(sae, x_ND, sae(x_ND), 0.1, NO_DEAD, 7.5, local_share=0.0)
    assert set(terms) == {"sparsity", "auxiliary"}


@pytest.mark.parametrize("loss_class", [E2ELoss, E2EDownstreamLoss])
@pytest.mark.parametrize("sae_class", [BatchTopKSAE, MatryoshkaSAE])
def test_under_e2e_a_batch_budget_is_trained_on_the_local_error_of_the_spliced_tokens(small_lm, make_tokens, loss_class, sae_class):
    """The term is the local MSE of the very code the LM was run with: the ordinary tokens' scaled activations
    through the SAE in training mode, times the auxiliary weight (w_local - 0 = 1)."""
    torch.manual_seed(0)
    sae = sae_class(16, 64, k=4)
    tokens = make_tokens(small_lm, 4, 12)
    loss = loss_class()
    loss.bind(small_lm, HOOK)
    loss.auxiliary_weight = 3.0
    with torch.no_grad():
        terms = loss(sae, tokens, SCALE, 0.0, NO_DEAD).terms
        x_ND = small_lm.activations_at(tokens, HOOK)[~small_lm.special_token_mask(tokens)] * SCALE
        expected = 3.0 * reconstruction_error(x_ND, sae(x_ND).reconstruction_BD)
    assert float(terms["local_reconstruction"]) == pytest.approx(float(expected), rel=1e-5)


def test_local_then_e2e_adds_the_share_its_fine_tune_takes_from_the_local_error(small_lm, make_tokens):
    """Its fine-tune weighs the local MSE by 1 - kl_weight; BatchTopK gets kl_weight more of it. Its local phase is the
    local loss, which adds nothing."""
    torch.manual_seed(0)
    sae = BatchTopKSAE(16, 64, k=4)
    tokens = make_tokens(small_lm, 4, 12)
    loss = LocalThenE2ELoss(kl_weight=0.8)
    loss.bind(small_lm, HOOK)
    with torch.no_grad():
        terms = loss(sae, tokens, SCALE, 0.0, NO_DEAD).terms
        local_terms = LocalLoss()(sae, torch.randn(40, 16), 1.0, 0.0, NO_DEAD).terms
    assert float(terms["local_reconstruction"]) == pytest.approx(0.8 / 0.2 * float(terms["reconstruction"]), rel=1e-5)
    assert "local_reconstruction" not in local_terms
