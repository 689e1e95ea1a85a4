"""Gated SAE (Rajamanoharan et al. 2024a): a gate decides which latents fire, a magnitude path
sharing the gate's weights decides how strongly, so the L1 penalty does not shrink magnitudes.

Parameters follow SAELens' gated layout: W_enc (= W_gate), b_gate, r_mag, b_mag, W_dec, b_dec.
    pi_gate = W_enc (x - b_dec) + b_gate                     f_gate = H(pi_gate)
    pi_mag  = exp(r_mag) * W_enc (x - b_dec) + b_mag          f_mag  = ReLU(pi_mag)
    f = f_gate * f_mag
Since W_enc (x - b_dec) = pi_gate - b_gate, the magnitude path is a function of pi_gate, so the
architecture fits the base interface: pre-activations are pi_gate (`SAEOutput.pre_acts_BF`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sae_sweeps.saes.base import SAEOutput, SparseAutoencoder
from sae_sweeps.saes.topk import code_error, dead_latent_terms, keep_top_k_by_direction, target_k


class GatedSAE(SparseAutoencoder):
    """Loss terms: sparsity = sum_i ReLU(pi_gate_i) ||W_dec_i|| per token (the coefficient
    multiplies it); auxiliary = ||x - (ReLU(pi_gate) W_dec + b_dec)||^2 through a detached copy of
    the decoder, weight 1, which trains the gate to reconstruct on its own. The reconstruction
    term reaches the gate only through the shared W_enc (H has no gradient)."""

    architecture: ClassVar[str] = "gated"
    saelens_architecture: ClassVar[str] = "gated"
    activation_unit_params: ClassVar[tuple[str, ...]] = ("b_gate", "b_mag", "b_dec")
    dead_latent_aux_coefficient: ClassVar[float] = 1 / 32
    """Weight of AuxK on the dead latents' gate pre-activations (as TopK's `aux_coefficient`; 0 switches it off)."""
    dead_gate_pull: ClassVar[float] = 1e-3
    """Weight of minus the sum of the dead latents' gate biases in the auxiliary loss: a latent whose
    gate never opens gets no gradient from the reconstruction, the L1 term or the gate's own
    reconstruction (all pass through ReLU(pi_gate) or H(pi_gate)); raising b_gate opens it again, as
    JumpReLU's dead thresholds are lowered (under Adam the weight hardly matters: ~lr per step)."""

    def __init__(self, d_in: int, d_sae: int, per_token_weight: float = 0.0, d_out: int | None = None, skip: bool = False) -> None:
        super().__init__(d_in, d_sae, d_out, skip)
        self.per_token_weight = float(per_token_weight)
        del self.b_enc  # the gate's bias is b_gate (SAELens' name)
        self.b_gate = nn.Parameter(torch.zeros(d_sae))
        self.r_mag = nn.Parameter(torch.zeros(d_sae))
        self.b_mag = nn.Parameter(torch.zeros(d_sae))

    def encoder_bias(self) -> Tensor:
        """The gate path's: pre-activations are pi_gate."""
        return self.b_gate

    def magnitudes(self, pre_acts_BF: Tensor) -> Tensor:
        """f_mag = ReLU(pi_mag), computed from pi_gate (the two paths share W_enc)."""
        return torch.relu(torch.exp(self.r_mag) * (pre_acts_BF - self.b_gate) + self.b_mag)

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        gate_BF = (pre_acts_BF > 0).to(pre_acts_BF.dtype)
        return gate_BF * self.magnitudes(pre_acts_BF)

    def per_token_topk_error(self, x_BD: Tensor, out: SAEOutput, k: int) -> Tensor:
        """Per-token mean ||x - decode(c)||^2, c = f_mag at each token's k latents whose gate
        direction W_enc[:, i] best matches the token (`keep_top_k_by_direction`), zero elsewhere.
        Values from the magnitude path, as in the gated code itself (pi_gate's own values fight the
        gate's reconstruction term: 69.9% of synthetic features found). Ranked by direction, not by
        pi_gate: the L1 price lowers weak latents' b_gate and shortens their columns, so ranking by
        pi_gate found 86% (by pi_gate - b_gate 82%, by pi_mag 83%), by direction 94.5%."""
        code_BF = keep_top_k_by_direction(out.pre_acts_BF - self.b_gate, self.W_enc, self.magnitudes(out.pre_acts_BF), k)
        return code_error(self, x_BD, out, code_BF)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        return (torch.relu(out.pre_acts_BF) * self.decoder_norms()).sum(dim=-1).mean()

    def auxiliary_loss(self, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor) -> Tensor:
        """The gate's own reconstruction, and for dead latents AuxK and the pull on their gate biases."""
        x_hat_gate_BD = torch.relu(out.pre_acts_BF) @ self.W_dec.detach() + self.b_dec.detach()
        if out.skip_BD is not None:  # a skip transcoder's linear part, held fixed like the decoder
            x_hat_gate_BD = x_hat_gate_BD + out.skip_BD.detach()
        gate_reconstruction = (x_BD - x_hat_gate_BD).pow(2).sum(dim=-1).mean()
        loss = gate_reconstruction + dead_latent_terms(
            self, x_BD, out, dead_latents_F, self.b_gate, self.dead_latent_aux_coefficient, self.dead_gate_pull
        )
        target_l0 = self.sparsity.target_l0
        if self.per_token_weight and target_l0 is not None:
            loss = loss + self.per_token_weight * self.per_token_topk_error(x_BD, out, target_k(target_l0))
        return loss

    def init_kwargs(self) -> dict[str, Any]:
        return super().init_kwargs() | {"per_token_weight": self.per_token_weight}
