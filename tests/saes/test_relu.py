"""ReLU SAE: the per-token TopK term it adds in target mode."""

import torch

from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.sparsity import CoefficientController


def _sae(per_token_weight: float = 0.0, target_l0: float | None = None) -> ReLUSAE:
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=8, d_sae=16, per_token_weight=per_token_weight)
    with torch.no_grad():
        sae.b_enc.copy_(-torch.rand(16))  # an L1-trained SAE's negative biases
        sae.b_dec.copy_(0.1 * torch.randn(8))
        sae.W_enc.mul_(torch.rand(16) + 0.1)  # and its encoder columns of unequal lengths
    if target_l0 is not None:  # the controller a `sparsity.target_l0` run gives it
        sae.sparsity = CoefficientController(0.1, target_l0, 0, 10, 0.1, 0.1, 0.9, 5.0, 0.0)
    return sae


def test_per_token_term_ranks_by_encoder_direction_and_decodes_the_projections():
    # Property, by hand: p = (x - b_dec) W_enc; keep, per token, p at the k = round(target_l0) largest
    # p_i / ||W_enc[:, i]||, ReLU'd; the term is weight x ||x - (c W_dec + b_dec)||^2. The code stays ReLU(pre).
    sae = _sae(per_token_weight=2.0, target_l0=3.4)
    x = torch.randn(32, 8)
    out = sae(x)
    assert torch.equal(out.latents_BF, torch.relu(sae.pre_activations(x)))
    p = (x - sae.b_dec) @ sae.W_enc
    chosen = (p / sae.W_enc.norm(dim=0)).topk(3, dim=-1).indices
    code = torch.zeros_like(p).scatter(-1, chosen, torch.relu(p.gather(-1, chosen)))
    expected = (x - code @ sae.W_dec - sae.b_dec).pow(2).sum(-1).mean()
    dead = torch.zeros(16, dtype=torch.bool)
    assert torch.allclose(sae.auxiliary_loss(x, out, dead), 2.0 * expected, rtol=1e-5)


def test_a_shrunk_encoder_column_still_ranks_by_its_direction():
    # Property: the L1 price shortens a weak latent's encoder column; the term still picks the latent
    # whose direction matches the token, not the one with the longer column.
    sae = _sae(per_token_weight=1.0, target_l0=1)
    x = torch.zeros(1, 8)
    x[0, 0] = 1.0
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.W_enc.zero_()
        sae.W_enc[0, 0] = 0.05  # aligned with x, short
        sae.W_enc[:2, 1] = torch.tensor([1.0, 1.0])  # 45 degrees off, long: the larger projection
    out = sae(x)
    sae.auxiliary_loss(x, out, torch.zeros(16, dtype=torch.bool)).backward()
    assert sae.W_dec.grad[0].abs().sum() > 0 and sae.W_dec.grad[1].abs().sum() == 0


def test_no_term_without_a_target_or_weight():
    x = torch.randn(8, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    for sae in (_sae(per_token_weight=1.0), _sae(per_token_weight=0.0, target_l0=3)):
        assert sae.auxiliary_loss(x, sae(x), dead).item() == 0.0


def test_per_token_term_trains_latents_the_l1_price_has_silenced():
    # Property: a latent whose bias keeps ReLU(pre) at 0 on every token gets no gradient from the
    # reconstruction, but when its direction is among a token's k best the term trains its decoder
    # row and encoder column; its bias is left to the L1 term.
    sae = _sae(per_token_weight=1.0, target_l0=2)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    x = torch.randn(4, 8)
    out = sae(x)
    assert int((out.latents_BF != 0).sum()) == 0
    p = (x - sae.b_dec) @ sae.W_enc
    chosen_BK = (p / sae.W_enc.norm(dim=0)).topk(2, dim=-1).indices
    positive = chosen_BK[p.gather(-1, chosen_BK) > 0].unique()  # ReLU'd: a negative projection gives nothing
    sae.auxiliary_loss(x, out, torch.zeros(16, dtype=torch.bool)).backward()
    assert len(positive) > 0
    assert (sae.W_dec.grad[positive].abs().sum(dim=-1) > 0).all()
    assert (sae.W_enc.grad[:, positive].abs().sum(dim=0) > 0).all()
    assert torch.allclose(sae.b_enc.grad, torch.zeros(16), atol=1e-6)
