"""The interface between a training objective and the trainer.

A loss turns one batch into a scalar to minimise, and says which batches it needs (`training_stream`,
`steps_for_budget`): activation rows at the hook, token contexts it runs through the LM, or whatever
a new loss needs, from the corpus. The trainer never looks inside: adding a loss means a new class
here and a file under conf/loss/, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SAEOutput, SparseAutoencoder

if TYPE_CHECKING:
    from sae_sweeps.data.corpus import Corpus


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


Phase = Literal["local", "e2e"]
"""What a training step's objective needs: activations alone (`local`) or passes through the LM (`e2e`)."""
PHASES: tuple[Phase, ...] = ("local", "e2e")


class SAELoss(ABC):
    """An objective for an SAE at a hook point."""

    phase: ClassVar[Phase]
    """The kind of every step of this loss (a loss that changes objective during training overrides `phase_of`)."""
    auxiliary_weight: float = 1.0
    """What the architecture's auxiliary terms are multiplied by: the loss's `fidelity_scale`, set before training
    (the terms were tuned against the local reconstruction error; docs/method.md#losses)."""

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Raise ValueError naming the `loss.*` key of a value this loss cannot use (before any model loads)."""

    def phase_of(self, batch: Tensor) -> Phase:
        """Which kind of step `batch` makes (the summary records tokens and time per phase)."""
        return self.phase

    def state_dict(self) -> dict[str, Any]:
        """What the loss learned during training that a resumed run needs (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s values."""

    @abstractmethod
    def steps_for_budget(self, data: Corpus, tokens: int, batch_tokens: int) -> int:
        """Optimiser steps that train on `tokens` tokens in batches of about `batch_tokens`."""

    @abstractmethod
    def training_stream(
        self, data: Corpus, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> IterableDataset:
        """The global batches this loss trains on, from optimiser step `start_batch` on (a resumed run gets
        exactly the batches an uninterrupted one would have had)."""

    def bind(self, model: LanguageModel, hook: HookPoint) -> None:
        """Give the loss the frozen LM and hook point, for losses that run the model."""

    def fidelity_scale(
        self, sae: SparseAutoencoder, data: Corpus, batch_tokens: int, input_scale: float, output_scale: float
    ) -> float:
        """This loss's fidelity term over the local reconstruction error, for `sae` as it is, on the first
        training batch: what a sparsity coefficient set for the local loss must be multiplied by to weigh
        the same against it (1 for losses whose fidelity is the local one, or starts as it)."""
        return 1.0

    @abstractmethod
    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
        output_scale: float | None = None,
    ) -> LossOutput:
        """The objective on one batch; the SAE sees activations multiplied by `input_scale` (and a transcoder
        predicts its output multiplied by `output_scale`; None: the input's scale)."""


def architecture_terms(
    sae: SparseAutoencoder,
    target_ND: Tensor,
    out: SAEOutput,
    sparsity_coefficient: float,
    dead_latents_F: Tensor,
    auxiliary_weight: float,
    local_share: float,
) -> dict[str, Tensor]:
    """The architecture's own terms, which every loss adds to its fidelity term (`target_ND`: what the SAE
    reconstructs, scaled: its input, or a transcoder's output). `local_share` is the weight the loss's
    fidelity term already gives the local reconstruction error (local: 1, e2e: 0); an architecture that
    needs more of it (`SparseAutoencoder.local_reconstruction_weight`) gets the rest as its own term."""
    terms = {
        "sparsity": sparsity_coefficient * sae.sparsity_loss(out),
        "auxiliary": auxiliary_weight * sae.auxiliary_loss(target_ND, out, dead_latents_F),
    }
    missing = sae.local_reconstruction_weight - local_share
    if missing > 0:
        terms["local_reconstruction"] = auxiliary_weight * missing * reconstruction_error(target_ND, out.reconstruction_BD)
    return terms


def input_and_target(sae: SparseAutoencoder, rows_ND: Tensor) -> tuple[Tensor, Tensor]:
    """An activation row's SAE input and what the SAE reconstructs: the row itself for an SAE; a
    transcoder's rows hold its input and its target output side by side (LanguageModel.activations_at)."""
    if not sae.is_transcoder:
        return rows_ND, rows_ND
    if rows_ND.shape[-1] != sae.d_in + (sae.d_out or 0):
        raise ValueError(f"transcoder rows must hold d_in + d_out = {sae.d_in} + {sae.d_out} values, got {rows_ND.shape[-1]}")
    return rows_ND[..., : sae.d_in], rows_ND[..., sae.d_in :]


def reconstruction_error(target_ND: Tensor, reconstruction_ND: Tensor) -> Tensor:
    """Mean over tokens of ||target - reconstruction||^2 (in input-scaled units)."""
    return (target_ND - reconstruction_ND).pow(2).sum(dim=-1).mean()


def combine(terms: dict[str, Tensor], out: SAEOutput) -> LossOutput:
    total = sum(terms.values())
    n_tokens = out.latents_BF.numel() // out.latents_BF.shape[-1]
    return LossOutput(total, {k: v.detach() for k, v in terms.items()}, out.firing_counts_F.detach(), n_tokens)
