"""A loss whose fidelity is not the local MSE weighs the architecture's recipe by its fidelity scale (its fidelity
over the local reconstruction error at initialisation): a target-L0 controller's starting coefficient (a local-loss
weight) and the architecture's auxiliary terms are multiplied by it; a coefficient the user gave is not."""

from __future__ import annotations

import pytest
import torch

from sae_sweeps.losses.base import reconstruction_error
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.losses.local_then_e2e import LocalThenE2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.gated import GatedSAE
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.sparsity import CoefficientController, FixedCoefficient, HardBudget, TargetPenalty
from sae_sweeps.splicing import SpliceHook

HOOK = HookPoint.parse("blocks.1.hook_resid_pre")
SCALE = 0.3


class FirstBatch:
    """The one corpus method `fidelity_scale` uses: the first training batch of token contexts."""

    def __init__(self, tokens):
        self.tokens = tokens

    def token_stream(self, batch_tokens):
        return iter([self.tokens])


def controller() -> CoefficientController:
    return CoefficientController(0.05, 20, adapt_from_step=0, freeze_at_step=100, gain=0.06, proportional_gain=0.5,
                                 l0_decay=0.9, horizon_steps=5, anti_windup_steps=0)


def test_a_controller_starts_scaled_and_a_given_setting_stays_as_given():
    searching = controller()
    searching.start_at_fidelity_scale(12.0)
    assert float(searching.coefficient()) == pytest.approx(0.6)
    for given, value in ((FixedCoefficient(0.05), 0.05), (HardBudget(32, 32), 0.0), (TargetPenalty(0.003, 32), 0.003)):
        given.start_at_fidelity_scale(12.0)
        assert float(given.coefficient()) == value


@pytest.mark.parametrize("loss_class", [E2ELoss, E2EDownstreamLoss])
def test_the_auxiliary_terms_are_weighed_by_the_auxiliary_weight_and_nothing_else_is(small_lm, make_tokens, loss_class):
    """Gated's auxiliary terms (the gate's own reconstruction, AuxK on dead latents) scale linearly with the weight
    run.py sets to the fidelity scale; the fidelity and the sparsity term do not move."""
    torch.manual_seed(0)
    sae = GatedSAE(16, 64)
    tokens = make_tokens(small_lm, 4, 12)
    dead_F = torch.zeros(64, dtype=torch.bool)
    dead_F[::4] = True
    loss = loss_class()
    loss.bind(small_lm, HOOK)
    with torch.no_grad():
        unweighted = loss(sae, tokens, SCALE, 0.1, dead_F).terms
        loss.auxiliary_weight = 7.5
        weighed = loss(sae, tokens, SCALE, 0.1, dead_F).terms
    assert float(unweighted["auxiliary"]) > 0
    assert float(weighed["auxiliary"]) == pytest.approx(7.5 * float(unweighted["auxiliary"]), rel=1e-5)
    for name in unweighted.keys() - {"auxiliary"}:
        assert float(weighed[name]) == pytest.approx(float(unweighted[name]), rel=1e-6), name


@pytest.mark.parametrize("loss_class", [E2ELoss, E2EDownstreamLoss])
def test_the_e2e_fidelity_scale_is_its_fidelity_over_the_mse_at_the_hook_on_the_first_batch(small_lm, make_tokens, loss_class):
    torch.manual_seed(0)
    sae = ReLUSAE(16, 64)
    tokens = make_tokens(small_lm, 4, 12)
    loss = loss_class()
    loss.bind(small_lm, HOOK)
    scale = loss.fidelity_scale(sae, FirstBatch(tokens), 48, SCALE, SCALE)

    splice_hook = SpliceHook(sae, HOOK, ~small_lm.special_token_mask(tokens), SCALE)
    with torch.no_grad():
        terms, _ = loss.fidelity_terms(sae, tokens, SCALE, SCALE)
        small_lm.bridge.run_with_hooks(tokens, fwd_hooks=splice_hook.hooks())
    mse = reconstruction_error(splice_hook.splice.target_ND, splice_hook.splice.output.reconstruction_BD)
    assert scale == pytest.approx(float(sum(terms.values()) / mse), rel=1e-5)
    assert not any(p.grad is not None for p in sae.parameters())  # measured without a graph


@pytest.mark.parametrize("loss", [LocalLoss(), LocalThenE2ELoss()], ids=["local", "local_then_e2e"])
def test_losses_that_start_local_keep_the_coefficient(loss):
    """local_then_e2e starts as the local loss (its fine-tune balances itself at the switch)."""
    assert loss.fidelity_scale(None, None, 1024, 1.0, 1.0) == 1.0
