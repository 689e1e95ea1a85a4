"""Gated SAE: the gate/magnitude split with shared weights and its two extra loss terms."""

import torch

from sae_sweeps.saes.gated import GatedSAE
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
