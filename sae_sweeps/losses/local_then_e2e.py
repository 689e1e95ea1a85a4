"""Local training, then a short end-to-end fine-tune, in one run (Karvonen 2025, arXiv 2503.17272:
"Revisiting End-To-End Sparse Autoencoder Training: A Short Finetune Is All You Need").

The first 1 - F of the token budget is an ordinary local member: the reconstruction loss on
activation rows, which come from the sweep's shared activation cache (no LM pass of its own). The
final F trains on whole token contexts with

    (1 - w) * ||s x - x_hat||^2  +  w * lambda * E2E  +  c * sparsity  (+ auxiliary terms)

where E2E is the chosen end-to-end loss's fidelity (`e2e`: kl_coefficient * KL(P_orig || P_sae);
`e2e_ds`: plus its downstream errors), w = `kl_weight`, and lambda = MSE / E2E measured on the first
fine-tune batch, then held. At the switch the fidelity part therefore has the size the local loss
had, so the sparsity coefficient c (a raw one, a controller's, JumpReLU's target penalty) keeps the
weight it had against fidelity and L0 does not jump: KL and the normalised MSE differ in scale by
an order of magnitude or more, the problem the paper solves by balancing the two (docs/e2e.md).

The fine-tune reads the training contexts that follow those the local phase read, so the run sees
as many distinct tokens as its budget. One learning-rate schedule spans both phases. A resumed run
starts in the phase its step belongs to, at the batch an uninterrupted run would have reached, and
gets lambda back from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.losses.base import LossOutput, Phase, SAELoss, architecture_terms, combine, reconstruction_error
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder

if TYPE_CHECKING:
    from sae_sweeps.data.corpus import Corpus

FINETUNES = ("e2e", "e2e_ds")
"""The end-to-end losses the fine-tune can use (`loss.finetune`)."""


class LocalThenE2ELoss(SAELoss):
    """The local loss for the first 1 - e2e_fraction of the tokens, then the balanced KL(+MSE)
    fine-tune of the module docstring."""

    def __init__(
        self, e2e_fraction: float = 0.1, kl_weight: float = 0.5, finetune: str = "e2e",
        kl_coefficient: float = 1.0, beta: float = 2.5,
    ) -> None:
        self.e2e_fraction, self.kl_weight = float(e2e_fraction), float(kl_weight)
        self.local = LocalLoss()
        self.finetune: E2ELoss = E2ELoss(kl_coefficient) if finetune == "e2e" else E2EDownstreamLoss(kl_coefficient, beta)
        self.balance: float | None = None
        """lambda: the normalised MSE over the e2e fidelity on the first fine-tune batch (None before it)."""
        self.local_steps: int | None = None
        """Optimiser steps of the local phase (set by `steps_for_budget`)."""

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        E2ELoss.check_config(cfg)
        fraction, weight, finetune = cfg.loss.get("e2e_fraction"), cfg.loss.get("kl_weight"), cfg.loss.get("finetune")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"loss.e2e_fraction={fraction} must be a number between 0 and 1 (exclusive): "
                             "use loss=local or loss=e2e for all of one kind")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(f"loss.kl_weight={weight} must be a number from 0 to 1")
        if finetune not in FINETUNES:
            raise ValueError(f"loss.finetune={finetune} must be one of {', '.join(FINETUNES)}")

    def bind(self, model: LanguageModel, hook: HookPoint) -> None:
        self.finetune.bind(model, hook)

    def phase_tokens(self, tokens: int) -> tuple[int, int]:
        """The budget's tokens for the local phase and for the fine-tune."""
        e2e_tokens = round(self.e2e_fraction * tokens)
        return tokens - e2e_tokens, e2e_tokens

    def steps_for_budget(self, data: Corpus, tokens: int, batch_tokens: int) -> int:
        local_tokens, e2e_tokens = self.phase_tokens(tokens)
        self.local_steps = self.local.steps_for_budget(data, local_tokens, batch_tokens)
        return self.local_steps + self.finetune.steps_for_budget(data, e2e_tokens, batch_tokens)

    def training_stream(
        self, data: Corpus, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> IterableDataset:
        if self.local_steps is None:
            raise RuntimeError("steps_for_budget must come before training_stream: it splits the budget")
        return PhasedStream(data, hook, batch_tokens, seed, self.local_steps, n_steps, start_batch)

    def phase_of(self, batch: Tensor) -> Phase:
        # The streams say which phase a batch is for: activation rows (floats) are reconstructed; token contexts
        # (ids, or a ContextBatch) go through the LM.
        return "local" if isinstance(batch, Tensor) and batch.is_floating_point() else "e2e"

    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
        output_scale: float | None = None,
    ) -> LossOutput:
        if self.phase_of(batch) == "local":
            return self.local(sae, batch, input_scale, sparsity_coefficient, dead_latents_F, output_scale)
        e2e_terms, splice = self.finetune.fidelity_terms(sae, batch, input_scale, output_scale)
        mse = reconstruction_error(splice.target_ND, splice.output.reconstruction_BD)
        e2e = sum(e2e_terms.values())
        if self.balance is None:
            self.balance = float(mse.detach() / e2e.detach().clamp_min(torch.finfo(e2e.dtype).tiny))
        terms = {"reconstruction": (1 - self.kl_weight) * mse}
        terms |= {name: self.kl_weight * self.balance * term for name, term in e2e_terms.items()}
        terms |= architecture_terms(
            sae, splice.target_ND, splice.output, sparsity_coefficient, dead_latents_F, self.auxiliary_weight, local_share=1 - self.kl_weight
        )
        return combine(terms, splice.output)

    def state_dict(self) -> dict[str, Any]:
        return {"balance": self.balance}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.balance = state.get("balance")


class PhasedStream(IterableDataset):
    """The local phase's activation batches for steps [0, local_steps), then the fine-tune's context batches
    for steps [local_steps, n_steps), from the training contexts after those the local phase read; from
    step `start_batch` on."""

    def __init__(
        self, data: Corpus, hook: HookPoint, batch_tokens: int, seed: int, local_steps: int, n_steps: int, start_batch: int = 0
    ) -> None:
        self.data, self.hook, self.batch_tokens, self.seed = data, hook, batch_tokens, seed
        self.local_steps, self.n_steps, self.start_batch = local_steps, n_steps, int(start_batch)

    def __iter__(self) -> Iterator[Tensor]:
        if self.start_batch < self.local_steps:
            local = self.data.activation_stream(self.hook, self.batch_tokens, self.seed, self.local_steps, self.start_batch)
            yield from islice(local, self.local_steps - self.start_batch)
        first_context = self.data.contexts_read_by_activation_stream(self.batch_tokens, self.local_steps)
        yield from self.data.context_stream(
            self.hook, self.batch_tokens, self.n_steps - self.local_steps, max(0, self.start_batch - self.local_steps), first_context
        )
