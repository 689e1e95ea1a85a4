"""ReLU SAE with an L1 penalty weighted by decoder norms ("standard" SAE)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from sae_sweeps.saes.base import SAEOutput, SparseAutoencoder


class ReLUSAE(SparseAutoencoder):
    """f = ReLU(pre); penalty sum_i f_i ||W_dec_i|| per token (shrinks activations; docs/method.md#relu)."""

    architecture: ClassVar[str] = "relu"
    saelens_architecture: ClassVar[str] = "standard"

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        return torch.relu(pre_acts_BF)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        # Weighting by the decoder norm stops the optimiser buying sparsity by growing W_dec.
        return (out.latents_BF * self.decoder_norms()).sum(dim=-1).mean()
