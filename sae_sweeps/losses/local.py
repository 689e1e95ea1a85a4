"""Local loss: reconstruct the activation itself, ||x - x_hat||^2 + phi * sparsity; for a transcoder,
its output activation, ||y - y_hat||^2 + phi * sparsity (y scaled so that E||y||^2 is the same as E||x||^2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.losses.base import LossOutput, SAELoss, architecture_terms, combine, input_and_target, reconstruction_error
from sae_sweeps.models import HookPoint
from sae_sweeps.saes import SparseAutoencoder

if TYPE_CHECKING:
    from sae_sweeps.data.corpus import Corpus


class LocalLoss(SAELoss):
    """Mean over tokens of the squared reconstruction error (in input-scaled units) plus the
    architecture's sparsity and auxiliary terms."""

    phase = "local"

    def steps_for_budget(self, data: Corpus, tokens: int, batch_tokens: int) -> int:
        return max(1, tokens // batch_tokens)

    def training_stream(
        self, data: Corpus, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> IterableDataset:
        """Shuffled activation rows at the hook (a transcoder's input/output pairs), shared through the activation cache."""
        return data.activation_stream(hook, batch_tokens, seed, n_steps, start_batch)

    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
        output_scale: float | None = None,
    ) -> LossOutput:
        x_ND, target_ND = input_and_target(sae, batch)
        x_ND = x_ND * input_scale
        target_ND = x_ND if not sae.is_transcoder else target_ND * (input_scale if output_scale is None else output_scale)
        out = sae(x_ND)
        terms = {"reconstruction": reconstruction_error(target_ND, out.reconstruction_BD)}
        terms |= architecture_terms(sae, target_ND, out, sparsity_coefficient, dead_latents_F, self.auxiliary_weight, local_share=1.0)
        return combine(terms, out)
