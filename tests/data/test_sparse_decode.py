"""Sparse TopK decoding (saes/sparse_decode.py) computes the dense TopK SAE's outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from sae_sweeps.saes.sparse_decode import sparse_decode, sparse_decode_enabled
from sae_sweeps.saes.topk import TopKSAE


def pair(d_in=16, d_sae=96, k=4, dtype=torch.float64):
    torch.manual_seed(0)
    dense = TopKSAE(d_in=d_in, d_sae=d_sae, k=k, aux_k=8).to(dtype)
    sparse = TopKSAE(d_in=d_in, d_sae=d_sae, k=k, aux_k=8).to(dtype)
    assert sparse.enable_fast_path(True, torch.device("cpu"))
    sparse.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for sae in (dense, sparse):
            sae.b_dec.copy_(torch.linspace(-0.3, 0.3, d_in))
            sae.b_enc.copy_(torch.linspace(-0.2, 0.1, d_sae))
    return dense, sparse


@pytest.mark.parametrize("with_dead_latents", [False, True])
def test_sparse_topk_matches_the_dense_forward_and_every_gradient(with_dead_latents):
    dense, sparse = pair()
    x = torch.randn(64, 16, dtype=torch.float64)
    dead = torch.zeros(96, dtype=torch.bool)
    if with_dead_latents:
        dead[::3] = True  # AuxK sends a dense gradient into the pre-activations
    for sae in (dense, sparse):
        out = sae(x)
        loss = (x - out.reconstruction_BD).pow(2).sum(-1).mean() + sae.auxiliary_loss(x, out, dead)
        loss.backward()
    out_d, out_s = dense(x), sparse(x)
    torch.testing.assert_close(out_s.reconstruction_BD, out_d.reconstruction_BD)
    torch.testing.assert_close(out_s.latents_BF, out_d.latents_BF)
    assert torch.equal(out_s.firing_counts_F, out_d.firing_counts_F)  # from indices vs. a dense scan
    for name, p in dense.named_parameters():
        torch.testing.assert_close(dict(sparse.named_parameters())[name].grad, p.grad, msg=name)


def test_sparse_decode_gradcheck():
    torch.manual_seed(0)
    W = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    values = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)
    indices = torch.stack([torch.randperm(20)[:3] for _ in range(6)])
    assert torch.autograd.gradcheck(lambda v, w: sparse_decode(v, indices, w), (values, W))


def test_sparse_is_chosen_on_cpu_for_small_k_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert sparse_decode_enabled("auto", cpu, 32, 4608)
    assert not sparse_decode_enabled("auto", cpu, 512, 4608)
    assert not sparse_decode_enabled("auto", cuda, 32, 4608)
    assert sparse_decode_enabled(True, cuda, 512, 4608) and not sparse_decode_enabled(False, cpu, 32, 4608)
