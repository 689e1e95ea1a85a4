"""The interface between a training objective and the trainer.

A loss turns one batch into a scalar to minimise. The trainer never looks inside: adding a loss
means a new class here and a file under conf/loss/, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, NamedTuple

from torch import Tensor

from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SAEOutput, SparseAutoencoder


class LossOutput(NamedTuple):
    """One training step's objective and what the trainer tracks from it."""

    total: Tensor
    """The scalar the optimiser minimises."""
    terms: dict[str, Tensor]
    """Each weighted component of `total`, detached, for logging."""
    firing_counts_F: Tensor
    """How many of the batch's ordinary tokens each latent fired on (L0, dead-latent statistics)."""
    n_tokens: int
    """How many ordinary tokens the SAE encoded in this batch."""


class SAELoss(ABC):
    """An objective for an SAE at a hook point."""

    input_kind: ClassVar[Literal["activations", "tokens"]]
    """What the data module must feed: activation vectors, or token contexts the loss runs through the LM."""

    def bind(self, model: LanguageModel, hook: HookPoint) -> None:
        """Give the loss the frozen LM and hook point, for losses that run the model."""

    @abstractmethod
    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
    ) -> LossOutput:
        """The objective on one batch; the SAE sees activations multiplied by `input_scale`."""


def architecture_terms(
    sae: SparseAutoencoder,
    x_ND: Tensor,
    out: SAEOutput,
    sparsity_coefficient: float,
    dead_latents_F: Tensor,
) -> dict[str, Tensor]:
    """The architecture's own terms, which every loss adds to its fidelity term."""
    return {
        "sparsity": sparsity_coefficient * sae.sparsity_loss(out),
        "auxiliary": sae.auxiliary_loss(x_ND, out, dead_latents_F),
    }


def combine(terms: dict[str, Tensor], out: SAEOutput) -> LossOutput:
    total = sum(terms.values())
    n_tokens = out.latents_BF.numel() // out.latents_BF.shape[-1]
    return LossOutput(total, {k: v.detach() for k, v in terms.items()}, out.firing_counts_F.detach(), n_tokens)
