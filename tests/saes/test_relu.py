"""ReLU SAE: the per-token TopK term it adds in target mode."""

import torch

from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.sparsity import CoefficientController
from sae_sweeps.saes.topk import TopKSAE


def _sae(per_token_weight: float = 0.0, target_l0: float | None = None) -> ReLUSAE:
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=8, d_sae=16, per_token_weight=per_token_weight)
    with torch.no_grad():
        sae.b_enc.copy_(-torch.rand(16))  # an L1-trained SAE's negative biases
        sae.b_dec.copy_(0.1 * torch.randn(8))
    if target_l0 is not None:  # the controller a `sparsity.target_l0` run gives it
        sae.sparsity = CoefficientController(0.1, target_l0, 0, 10, 0.1, 0.1, 0.9, 5.0)
    return sae


def test_per_token_term_is_a_bias_free_topk_sae_error_of_the_same_dictionary():
    # Property: the term is weight x the error of a TopK SAE (k = round(target_l0)) with these W_enc,
    # W_dec, b_dec and b_enc = 0, while the code stays ReLU(pre).
    sae = _sae(per_token_weight=2.0, target_l0=3.4)
    topk = TopKSAE(d_in=8, d_sae=16, k=3)
    topk.load_state_dict({k: v for k, v in sae.state_dict().items() if k != "b_enc"}, strict=False)
    with torch.no_grad():
        topk.b_enc.zero_()
    x = torch.randn(32, 8)
    out = sae(x)
    assert torch.equal(out.latents_BF, torch.relu(sae.pre_activations(x)))
    topk_error = (x - topk(x).reconstruction_BD).pow(2).sum(-1).mean()
    dead = torch.zeros(16, dtype=torch.bool)
    assert torch.allclose(sae.auxiliary_loss(x, out, dead), 2.0 * topk_error, rtol=1e-5)


def test_no_term_without_a_target_or_weight():
    x = torch.randn(8, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    for sae in (_sae(per_token_weight=1.0), _sae(per_token_weight=0.0, target_l0=3)):
        assert sae.auxiliary_loss(x, sae(x), dead).item() == 0.0


def test_per_token_term_trains_latents_the_l1_price_has_silenced():
    # Property: a latent whose bias keeps ReLU(pre) at 0 on every token gets no gradient from the
    # reconstruction, but when its direction is among a token's k best projections the term trains
    # its decoder row and encoder column; its bias is left to the L1 term.
    sae = _sae(per_token_weight=1.0, target_l0=2)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    x = torch.randn(4, 8)
    out = sae(x)
    assert int((out.latents_BF != 0).sum()) == 0
    chosen = (out.pre_acts_BF - sae.b_enc).topk(2, dim=-1).indices.unique()
    sae.auxiliary_loss(x, out, torch.zeros(16, dtype=torch.bool)).backward()
    assert (sae.W_dec.grad[chosen].abs().sum(dim=-1) > 0).all()
    assert (sae.W_enc.grad[:, chosen].abs().sum(dim=0) > 0).all()
    assert torch.allclose(sae.b_enc.grad, torch.zeros(16), atol=1e-6)
