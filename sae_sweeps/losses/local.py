"""Local loss: reconstruct the activation itself, ||x - x_hat||^2 + phi * sparsity."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor

from sae_sweeps.losses.base import LossOutput, SAELoss, architecture_terms, combine
from sae_sweeps.saes import SparseAutoencoder


class LocalLoss(SAELoss):
    """Mean over tokens of the squared reconstruction error (in input-scaled units) plus the
    architecture's sparsity and auxiliary terms."""

    input_kind: ClassVar[Literal["activations", "tokens"]] = "activations"

    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
    ) -> LossOutput:
        x_ND = batch * input_scale
        out = sae(x_ND)
        terms = {"reconstruction": (x_ND - out.reconstruction_BD).pow(2).sum(dim=-1).mean()}
        terms |= architecture_terms(sae, x_ND, out, sparsity_coefficient, dead_latents_F)
        return combine(terms, out)
