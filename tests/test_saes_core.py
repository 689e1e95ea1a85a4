"""Invariants of the core architectures (ReLU, TopK) and of the saved format."""

import torch

from sae_sweeps.saes.io import load_sae, save_sae
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.topk import TopKSAE, auxk_loss


def test_topk_keeps_exactly_k_latents_per_token():
    torch.manual_seed(0)
    sae = TopKSAE(d_in=16, d_sae=64, k=5)
    sae.b_enc.data += 10.0  # every pre-activation positive, so ReLU zeroes none of the k survivors
    latents = sae.encode(torch.randn(32, 16))
    assert ((latents != 0).sum(dim=-1) == 5).all()
    pre = sae.pre_activations(torch.randn(4, 16))
    kept = sae.activation(pre)
    # the survivors are the k largest pre-activations of their row
    assert torch.equal((kept != 0), pre >= pre.topk(5, dim=-1).values[:, -1:])


def test_auxk_loss_gradient_reaches_only_dead_latents():
    torch.manual_seed(0)
    sae = TopKSAE(d_in=8, d_sae=32, k=2, aux_k=4)
    x = torch.randn(64, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:10] = True
    out = sae(x)
    sae.auxiliary_loss(x, out, dead).backward()
    enc_grad_per_latent = sae.W_enc.grad.abs().sum(dim=0)
    dec_grad_per_latent = sae.W_dec.grad.abs().sum(dim=1)
    assert (enc_grad_per_latent[~dead] == 0).all() and (dec_grad_per_latent[~dead] == 0).all()
    assert enc_grad_per_latent[dead].sum() > 0 and dec_grad_per_latent[dead].sum() > 0


def test_auxk_loss_is_zero_without_dead_latents_and_scaled_by_the_dead_count():
    torch.manual_seed(0)
    sae = TopKSAE(d_in=8, d_sae=32, k=2, aux_k=4)
    x = torch.randn(64, 8)
    out = sae(x)
    assert auxk_loss(x, out, sae.W_dec, torch.zeros(32, dtype=torch.bool), 4).item() == 0.0
    one_dead = torch.zeros(32, dtype=torch.bool)
    one_dead[3] = True
    # with one dead latent out of aux_k = 4 the loss is scaled by 1/4
    residual = (x - out.reconstruction_BD).detach()
    f3 = torch.relu(out.pre_acts_BF[:, 3:4])
    error = (residual - f3 * sae.W_dec[3]).pow(2).sum(-1).mean()
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    assert torch.allclose(auxk_loss(x, out, sae.W_dec, one_dead, 4), 0.25 * error / variance)


def test_decoder_rows_stay_unit_norm_through_training_steps():
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=8, d_sae=16)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(20):
        x = torch.randn(32, 8)
        out = sae(x)
        loss = (x - out.reconstruction_BD).pow(2).sum(-1).mean() + sae.sparsity_loss(out)
        opt.zero_grad()
        loss.backward()
        sae.remove_gradient_parallel_to_decoder()
        # after the projection, no row's gradient has a radial component
        assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(dim=1), torch.zeros(16), atol=1e-6)
        opt.step()
        sae.normalize_decoder()
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)


def test_relu_penalty_is_decoder_norm_weighted_l1():
    sae = ReLUSAE(d_in=2, d_sae=2)
    sae.W_dec.data = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = sae.forward(torch.zeros(1, 2))
    out = out._replace(latents_BF=torch.tensor([[1.0, 3.0], [0.0, 1.0]]))
    # token 1: 1*2 + 3*1 = 5; token 2: 0*2 + 1*1 = 1; mean 3
    assert sae.sparsity_loss(out).item() == 3.0


def test_saved_sae_loads_back_identical_and_takes_raw_activations(tmp_path):
    torch.manual_seed(0)
    for sae in (ReLUSAE(d_in=8, d_sae=32), TopKSAE(d_in=8, d_sae=32, k=4)):
        for p in sae.parameters():
            p.data += 0.1 * torch.randn_like(p)
        sae.normalize_decoder()
        scale = 0.37
        save_sae(sae, tmp_path / sae.architecture, input_scale=scale, metadata={"hook_name": "blocks.0.hook_resid_pre"})
        loaded = load_sae(tmp_path / sae.architecture)
        x_raw = torch.randn(16, 8)
        with torch.no_grad():
            trained_view = sae(x_raw * scale)
            saved_view = loaded(x_raw)
        # folding: the saved SAE on raw x equals the trained SAE on scaled x, unscaled
        assert torch.allclose(saved_view.reconstruction_BD, trained_view.reconstruction_BD / scale, atol=1e-5)
        assert torch.allclose(saved_view.latents_BF, trained_view.latents_BF / scale, atol=1e-5)
        assert torch.allclose(loaded.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)
        # a second load is bit-identical to the first
        again = load_sae(tmp_path / sae.architecture)
        with torch.no_grad():
            assert torch.equal(again(x_raw).reconstruction_BD, saved_view.reconstruction_BD)


def test_the_encoder_starts_as_the_decoder_transposed_times_its_init_scale():
    torch.manual_seed(0)
    tied = ReLUSAE(d_in=16, d_sae=32)
    torch.manual_seed(0)
    scaled = ReLUSAE(d_in=16, d_sae=32)
    scaled.scale_encoder(0.1)
    assert torch.equal(tied.W_enc, tied.W_dec.T) and torch.equal(scaled.W_dec, tied.W_dec)
    assert torch.allclose(scaled.W_enc, 0.1 * tied.W_dec.T)
    x_BD = torch.randn(8, 16)
    assert torch.allclose(scaled.pre_activations(x_BD), 0.1 * tied.pre_activations(x_BD), atol=1e-6)  # zero biases
