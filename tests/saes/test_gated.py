"""Gated SAE: the gate/magnitude split with shared weights and its two extra loss terms."""

import torch

from sae_sweeps.saes.gated import GatedSAE
from sae_sweeps.saes.sparsity import CoefficientController
from sae_sweeps.saes.topk import auxk_loss


def _sae():
    torch.manual_seed(0)
    sae = GatedSAE(d_in=8, d_sae=16)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return sae


def test_parameters_follow_the_saelens_gated_layout():
    assert sorted(n for n, _ in GatedSAE(4, 8).named_parameters()) == sorted(
        ["W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"]
    )


def test_forward_is_gate_times_magnitude_with_shared_weights():
    sae = _sae()
    x = torch.randn(32, 8)
    out = sae(x)
    centred = x - sae.b_dec
    pi_gate = centred @ sae.W_enc + sae.b_gate
    pi_mag = centred @ (sae.W_enc * torch.exp(sae.r_mag)) + sae.b_mag
    expected = (pi_gate > 0).float() * torch.relu(pi_mag)
    assert torch.allclose(out.pre_acts_BF, pi_gate)
    assert torch.allclose(out.latents_BF, expected, atol=1e-6)
    assert torch.allclose(out.reconstruction_BD, expected @ sae.W_dec + sae.b_dec, atol=1e-5)


def test_reconstruction_does_not_train_the_gate_bias():
    sae = _sae()
    x = torch.randn(32, 8)
    out = sae(x)
    (x - out.reconstruction_BD).pow(2).sum(-1).mean().backward()
    # H(pi_gate) has no gradient: the gate bias learns only from the sparsity and auxiliary terms
    assert torch.allclose(sae.b_gate.grad, torch.zeros(16), atol=1e-6)
    assert sae.r_mag.grad.abs().sum() > 0 and sae.b_mag.grad.abs().sum() > 0


def test_sparsity_loss_is_decoder_norm_weighted_l1_of_relu_gate_pre_activations():
    sae = _sae()
    x = torch.randn(32, 8)
    out = sae(x)
    expected = (torch.relu(out.pre_acts_BF) * sae.W_dec.norm(dim=1)).sum(-1).mean()
    assert torch.allclose(sae.sparsity_loss(out), expected)


def test_auxiliary_loss_reconstructs_from_the_gate_through_a_frozen_decoder():
    sae = _sae()
    x = torch.randn(32, 8)
    out = sae(x)
    aux = sae.auxiliary_loss(x, out, torch.zeros(16, dtype=torch.bool))
    expected = (x - torch.relu(out.pre_acts_BF) @ sae.W_dec - sae.b_dec).pow(2).sum(-1).mean()
    assert torch.allclose(aux, expected)
    aux.backward()
    assert sae.W_dec.grad is None  # W_dec and b_dec are detached in this term
    assert sae.W_enc.grad.abs().sum() > 0 and sae.b_gate.grad.abs().sum() > 0
    assert sae.b_dec.grad.abs().sum() > 0  # only through the encoder's input centring


def test_dead_latents_add_auxk_and_a_pull_that_opens_their_gates():
    sae = _sae()
    x = torch.randn(32, 8)
    with torch.no_grad():
        sae.b_gate[:4] = -100.0  # gates that never open: no other term reaches these biases
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:4] = True
    out = sae(x)
    alive_only = sae.auxiliary_loss(x, out, torch.zeros(16, dtype=torch.bool))
    auxk = auxk_loss(x, out, sae.W_dec, dead, 4)
    expected = alive_only + sae.dead_latent_aux_coefficient * auxk - sae.dead_gate_pull * sae.b_gate[:4].sum()
    assert torch.allclose(sae.auxiliary_loss(x, out, dead), expected)
    sae.auxiliary_loss(x, out, dead).backward()
    # the pull alone reaches a shut gate's bias: it rises by ~lr per Adam step until the gate opens
    assert torch.allclose(sae.b_gate.grad[:4], torch.full((4,), -sae.dead_gate_pull))


def _with_target(sae: GatedSAE, target_l0: float) -> GatedSAE:
    # the controller a `sparsity.target_l0` run gives a Gated SAE; the per-token term reads its target
    sae.sparsity = CoefficientController(0.1, target_l0, 0, 10, 0.1, 0.1, 0.9, 5.0, 0.0)
    return sae


def test_per_token_term_ranks_by_gate_direction_and_values_by_the_magnitude_path():
    # Property: the term is weight x ||x - decode(m * ReLU(pi_mag))||^2 with m = 1 on each token's
    # k largest (pi_gate - b_gate)_i / ||W_enc[:, i]||, computed here by hand; it is added only with
    # a target (k = round(target_l0)).
    sae = _sae()
    sae.per_token_weight = 2.0
    x = torch.randn(32, 8)
    out = sae(x)
    dead = torch.zeros(16, dtype=torch.bool)
    without_target = sae.auxiliary_loss(x, out, dead)
    _with_target(sae, 3.4)
    centred = x - sae.b_dec
    projections = centred @ sae.W_enc
    f_mag = torch.relu(centred @ (sae.W_enc * torch.exp(sae.r_mag)) + sae.b_mag)
    chosen = (projections / sae.W_enc.norm(dim=0)).topk(3, dim=-1).indices
    top3 = torch.zeros_like(projections).scatter_(-1, chosen, 1.0)
    expected = (x - (top3 * f_mag) @ sae.W_dec - sae.b_dec).pow(2).sum(-1).mean()
    assert torch.allclose(sae.per_token_topk_error(x, out, 3), expected, rtol=1e-5)
    assert torch.allclose(sae.auxiliary_loss(x, out, dead), without_target + 2.0 * expected, rtol=1e-5)


def test_per_token_term_trains_latents_whose_gate_is_shut():
    # Property: a latent among a token's k best-matching directions with its gate shut (pi_gate < 0)
    # gets no gradient from the gated code, but the per-token term trains its decoder row and,
    # through the magnitude path, its encoder column; the gate bias is left to the pull.
    sae = _sae()
    with torch.no_grad():
        sae.b_gate.fill_(-100.0)  # every gate shut: the code is all zeros
        sae.b_mag.fill_(1.0)  # magnitudes positive
    x = torch.randn(4, 8)
    out = sae(x)
    assert int((out.latents_BF != 0).sum()) == 0
    projections = (x - sae.b_dec) @ sae.W_enc
    chosen = (projections / sae.W_enc.norm(dim=0)).topk(2, dim=-1).indices.unique()
    sae.per_token_topk_error(x, out, 2).backward()
    assert (sae.W_dec.grad[chosen].abs().sum(dim=-1) > 0).all()
    assert (sae.W_enc.grad[:, chosen].abs().sum(dim=0) > 0).all()
    assert torch.allclose(sae.b_gate.grad, torch.zeros(16), atol=1e-6)
