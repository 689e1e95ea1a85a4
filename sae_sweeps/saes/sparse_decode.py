"""Sparse decoding for TopK-style SAEs: with k of d_sae latents active, the decoder and the
encoder's weight gradient need B*k*D multiply-adds, not B*d_sae*D.

Measured on this project's 2-core CPU (d_model 576, d_sae 4608, k 32, batch 4096, fp32, one thread,
CPU time; benchmarks/run_benchmarks.py reproduces it): the dense step spends ~5 dense matmuls
(~160 ms each); sparse decode forward via `embedding_bag` ~14 ms, its value gradient ~17 ms,
each weight gradient through a transposed CSR matrix ~22 ms. What stays: the encoder matmul and
`topk` over [B, d_sae]. It does not pay for large k: with AuxK's k_aux = d_model/2 = 288 the
sparse pieces cost as much as the dense ones, so AuxK (active only while latents are dead) keeps
its dense path, and so does the encoder gradient whenever something else (AuxK) sends a dense
gradient into the pre-activations.

On GPUs the dense bf16/TF32 matmuls are so fast that gather/scatter kernels rarely win at these
sizes; `sparse_decode_enabled("auto", ...)` therefore picks sparse on CPU only. Measure with
`benchmarks/run_benchmarks.py` before switching it on for a GPU.

TopKSAE (saes/topk.py) switches to it in `enable_fast_path`, which the trainer's performance
callback calls with `train.performance.sparse_decode`.
Results agree with the dense path to float rounding (the sums run in another order), not bit for bit.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae_sweeps.saes.base import SAEOutput

if TYPE_CHECKING:
    from sae_sweeps.saes.topk import TopKSAE

_SUM = 0  # embedding_bag mode "sum"
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def sparse_decode_enabled(setting: bool | str, device: torch.device, k: int, d_sae: int) -> bool:
    """`setting` true/false, or "auto": sparse on CPU when k is at most 1/16 of the dictionary."""
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(f"sparse_decode={setting!r}: use true, false or auto")
        return device.type == "cpu" and k * 16 <= d_sae
    return bool(setting)


def _transposed_csr(indices_BK: Tensor, d_sae: int) -> tuple[Tensor, Tensor, Tensor]:
    """The sparsity pattern of the [B, d_sae] code as a CSR matrix of its transpose [d_sae, B]:
    (order into the flattened [B*k] entries, crow_indices, col_indices)."""
    flat = indices_BK.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=d_sae)
    crow = torch.zeros(d_sae + 1, dtype=torch.long, device=flat.device)
    crow[1:] = counts.cumsum(0)
    cols = torch.div(order, indices_BK.shape[1], rounding_mode="floor")
    return order, crow, cols


def _sparse_t_matmul(pattern: tuple[Tensor, Tensor, Tensor], values_BK: Tensor, dense_BD: Tensor) -> Tensor:
    """S^T @ dense, S the [B, d_sae] matrix with `values_BK` at the pattern's entries -> [d_sae, D]."""
    order, crow, cols = pattern
    s_t = torch.sparse_csr_tensor(
        crow, cols, values_BK.reshape(-1)[order], (len(crow) - 1, len(dense_BD)), dtype=dense_BD.dtype,
        check_invariants=False,
    )
    return s_t @ dense_BD


def _bag_decode(W_dec_FD: Tensor, indices_BK: Tensor, values_BK: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """sum_j values[b, j] * W_dec[indices[b, j]] for each row b; also what its backward needs."""
    B, k = indices_BK.shape
    offsets = torch.arange(0, B * k, k, device=indices_BK.device)
    out, offset2bag, _, _ = torch.ops.aten._embedding_bag(
        W_dec_FD, indices_BK.reshape(-1), offsets, False, _SUM, False, values_BK.reshape(-1), False, -1
    )
    return out, offsets, offset2bag


class SparseDecode(torch.autograd.Function):
    """x_hat = sum_j values[b, j] W_dec[indices[b, j]]; gradients for values and W_dec."""

    @staticmethod
    def forward(ctx: Any, values_BK: Tensor, indices_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
        out, offsets, offset2bag = _bag_decode(W_dec_FD, indices_BK, values_BK)
        ctx.save_for_backward(values_BK, indices_BK, W_dec_FD, offsets, offset2bag)
        return out

    @staticmethod
    def backward(ctx: Any, grad_BD: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        values_BK, indices_BK, W_dec_FD, offsets, offset2bag = ctx.saved_tensors
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_BD.contiguous(), W_dec_FD, indices_BK.reshape(-1), offsets, offset2bag, _SUM, -1
            ).view_as(values_BK)
        if ctx.needs_input_grad[2]:
            grad_W = _sparse_t_matmul(_transposed_csr(indices_BK, len(W_dec_FD)), values_BK, grad_BD.contiguous())
        return grad_values, None, grad_W


def sparse_decode(values_BK: Tensor, indices_BK: Tensor, W_dec_FD: Tensor, b_dec_D: Tensor | None = None) -> Tensor:
    """The decoder on a TopK code given as (values, indices): [B, D]."""
    out = SparseDecode.apply(values_BK, indices_BK, W_dec_FD)
    return out if b_dec_D is None else out + b_dec_D


class SparseTopK(torch.autograd.Function):
    """The whole TopK SAE forward with sparse backward:
    pre = (x - b_dec) W_enc + b_enc; v, i = topk(pre, k); v = ReLU(v); x_hat = sum_j v_j W_dec[i_j] + b_dec.

    Outputs (x_hat, pre, values, indices). The encoder's weight gradient is a [d_sae, B] sparse
    matrix times x unless `pre` itself receives a gradient (AuxK), which makes it dense. The
    gradient of b_dec through the encoder is -W_enc @ grad(b_enc): no [B, D, d_sae] matmul for it.
    """

    @staticmethod
    def forward(
        ctx: Any, x_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, W_dec_FD: Tensor, b_dec_D: Tensor, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_c_BD = x_BD - b_dec_D
        pre_BF = torch.addmm(b_enc_F, x_c_BD, W_enc_DF)
        values_BK, indices_BK = pre_BF.topk(k, dim=-1, sorted=False)
        values_BK = values_BK.clamp_min(0)
        decoded_BD, offsets, offset2bag = _bag_decode(W_dec_FD, indices_BK, values_BK)
        ctx.save_for_backward(x_c_BD, W_enc_DF, W_dec_FD, values_BK, indices_BK, offsets, offset2bag)
        ctx.mark_non_differentiable(indices_BK)
        ctx.set_materialize_grads(False)
        return decoded_BD + b_dec_D, pre_BF, values_BK, indices_BK

    @staticmethod
    def backward(ctx: Any, g_recon_BD: Tensor | None, g_pre_BF: Tensor | None, g_values_BK: Tensor | None, _g_idx: Any):
        x_c_BD, W_enc_DF, W_dec_FD, values_BK, indices_BK, offsets, offset2bag = ctx.saved_tensors
        need_x, need_W_enc, need_b_enc, need_W_dec, need_b_dec, _ = ctx.needs_input_grad
        B, k = indices_BK.shape
        d_sae = W_dec_FD.shape[0]
        pattern = _transposed_csr(indices_BK, d_sae)
        grad_W_dec = grad_b_dec = None
        g_v = g_values_BK
        if g_recon_BD is not None:
            g_recon_BD = g_recon_BD.contiguous()
            if need_W_dec:
                grad_W_dec = _sparse_t_matmul(pattern, values_BK, g_recon_BD)
            if need_b_dec:
                grad_b_dec = g_recon_BD.sum(0)
            g_from_recon = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                g_recon_BD, W_dec_FD, indices_BK.reshape(-1), offsets, offset2bag, _SUM, -1
            ).view(B, k)
            g_v = g_from_recon if g_v is None else g_v + g_from_recon
        if g_v is not None:
            g_v = g_v * (values_BK > 0)  # ReLU on the kept values
        grad_x = grad_W_enc = grad_b_enc = None
        if g_pre_BF is not None:  # dense gradient into the pre-activations (AuxK): the dense way
            G_BF = g_pre_BF if g_v is None else g_pre_BF.scatter_add(-1, indices_BK, g_v)
            if need_W_enc:
                grad_W_enc = x_c_BD.t() @ G_BF
            grad_b_enc = G_BF.sum(0)
            if need_x:
                grad_x = G_BF @ W_enc_DF.t()
        elif g_v is not None:
            if need_W_enc:
                grad_W_enc = _sparse_t_matmul(pattern, g_v, x_c_BD).t()
            grad_b_enc = torch.zeros(d_sae, dtype=g_v.dtype, device=g_v.device).index_add_(
                0, indices_BK.reshape(-1), g_v.reshape(-1)
            )
            if need_x:
                grad_x = _bag_decode(W_enc_DF.t().contiguous(), indices_BK, g_v)[0]
        if need_b_dec and grad_b_enc is not None:
            from_encoder = -(W_enc_DF @ grad_b_enc)
            grad_b_dec = from_encoder if grad_b_dec is None else grad_b_dec + from_encoder
        return grad_x, grad_W_enc, grad_b_enc if need_b_enc else None, grad_W_dec, grad_b_dec, None


def sparse_topk_forward(sae: TopKSAE, x_BD: Tensor) -> SAEOutput:
    """`TopKSAE.forward` with sparse decoding; the dense code is still returned (the evaluator and
    the e2e splice read it), built from the k values per token."""
    recon_BD, pre_BF, values_BK, indices_BK = SparseTopK.apply(
        x_BD, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.k
    )
    latents_BF = torch.zeros_like(pre_BF).scatter(-1, indices_BK, values_BK)
    # Counted from the k indices per token, not by a scan of the dense code.
    firing_counts_F = torch.bincount(indices_BK[values_BK > 0], minlength=sae.d_sae)
    return SAEOutput(latents_BF, recon_BD, pre_BF, firing_counts_F)
