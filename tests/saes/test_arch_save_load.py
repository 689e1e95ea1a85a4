"""Every new architecture saves to and loads from the one on-disk format, and folding the input
scale into the saved weights leaves the reconstruction of raw x unchanged."""

import json

import pytest
import torch

from sae_sweeps.saes.batchtopk import BatchTopKSAE
from sae_sweeps.saes.gated import GatedSAE
from sae_sweeps.saes.io import load_sae, save_sae
from sae_sweeps.saes.jumprelu import JumpReLUSAE
from sae_sweeps.saes.matryoshka import MatryoshkaSAE

D, F = 8, 32
BUILDERS = {
    "jumprelu": lambda: JumpReLUSAE(D, F, target_l0=6),
    "batchtopk": lambda: BatchTopKSAE(D, F, k=4),
    "gated": lambda: GatedSAE(D, F),
    "matryoshka": lambda: MatryoshkaSAE(D, F, k=4, prefix_sizes=[4, 16]),
}
SAVED_AS = {"jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated", "matryoshka": "jumprelu"}
WEIGHTS = {
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"},
}


def _trained_looking(name: str):
    torch.manual_seed(0)
    sae = BUILDERS[name]()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(0.05 + 0.1 * torch.rand(F))
        sae.normalize_decoder()
        if isinstance(sae, BatchTopKSAE):
            sae.train()
            for _ in range(3):  # a few training batches set the inference threshold
                sae(torch.randn(64, D))
    return sae.eval()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_save_load_round_trip_gives_identical_outputs(tmp_path, name):
    sae = _trained_looking(name)
    save_sae(sae, tmp_path / name)
    cfg = json.loads((tmp_path / name / "cfg.json").read_text())
    assert cfg["architecture"] == SAVED_AS[name] and cfg["sae_sweeps"]["trained_as"] == name
    loaded = load_sae(tmp_path / name)
    assert set(loaded.state_dict()) == WEIGHTS[SAVED_AS[name]]
    x = torch.randn(64, D)
    with torch.no_grad():
        original, reloaded = sae(x), loaded(x)
    assert (original.latents_BF != 0).any()
    assert torch.equal(original.latents_BF, reloaded.latents_BF)
    assert torch.equal(original.reconstruction_BD, reloaded.reconstruction_BD)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_folding_the_input_scale_reconstructs_raw_x_as_the_trained_sae_does_scaled_x(tmp_path, name):
    sae = _trained_looking(name)
    scale = 0.37
    save_sae(sae, tmp_path / name, input_scale=scale)
    folded = load_sae(tmp_path / name)
    x_raw = 3 * torch.randn(64, D)
    with torch.no_grad():
        trained_view = sae(scale * x_raw)
        folded_view = folded(x_raw)
    assert (trained_view.latents_BF != 0).any()
    # sae_folded(x) == sae(s x) / s, latents included; the same latents fire
    assert torch.equal(folded_view.latents_BF != 0, trained_view.latents_BF != 0)
    assert torch.allclose(folded_view.reconstruction_BD, trained_view.reconstruction_BD / scale, atol=1e-5)
    assert torch.allclose(folded_view.latents_BF, trained_view.latents_BF / scale, atol=1e-5)
    assert torch.allclose(folded.W_dec.norm(dim=1), torch.ones(F), atol=1e-5)
