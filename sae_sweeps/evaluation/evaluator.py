"""Evaluation on held-out contexts: reconstruction, sparsity and what the SAE costs the LM."""

from __future__ import annotations

import torch
from torch import Tensor

from sae_sweeps.evaluation import metrics
from sae_sweeps.evaluation.reference_passes import ReferencePasses
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.splicing import (
    SpliceHook, kl_divergence, next_token_cross_entropy, next_token_log_probs, next_token_mask, summed_over_predictions,
)
from sae_sweeps.summary import HeldOutMetrics


class PerContext:
    """One float64 value (or row) per held-out context, filled batch by batch in context order."""

    def __init__(self) -> None:
        self._chunks: list[Tensor] = []

    def add(self, values_B: Tensor) -> None:
        self._chunks.append(values_B.double())

    def vector(self) -> Tensor:
        """[C] (or [C, D]): every context's value, in the order the batches came (empty before any batch)."""
        return torch.cat(self._chunks) if self._chunks else torch.zeros(0, dtype=torch.float64)


class HeldOutSums:
    """Per-context sums over held-out batches, in float64; `finish` turns them into `HeldOutMetrics`.

    Each metric is a ratio of sums over every context (as if the tokens were pooled); keeping the sums
    per context gives its standard error over contexts (docs/method.md#standard-errors).
    """

    def __init__(self, d_sae: int, device: torch.device) -> None:
        self.squared_error, self.squared_norm, self.sum_CD = PerContext(), PerContext(), PerContext()
        self.active_latents, self.tokens = PerContext(), PerContext()
        self.fired_F = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.ce_sae, self.kl = PerContext(), PerContext()
        self.predictions = PerContext()

    def add_reconstruction(
        self, x_ND: Tensor, x_hat_ND: Tensor, latents_NF: Tensor, ordinary_BT: Tensor, scale: float
    ) -> None:
        """Ordinary tokens' activations (a transcoder's target outputs) and reconstructions as the SAE saw them
        (multiplied by `scale`), and their codes; row n belongs to the n-th ordinary token of `ordinary_BT` in
        row-major order."""
        x_ND, x_hat_ND = x_ND.double() / scale, x_hat_ND.double() / scale

        def per_context(values_N: Tensor) -> Tensor:
            # Back to [B, T, ...] (zeros at special tokens), then summed over positions: cheaper than index_add_.
            dense = torch.zeros((*ordinary_BT.shape, *values_N.shape[1:]), dtype=torch.float64, device=values_N.device)
            dense[ordinary_BT] = values_N.double()
            return dense.sum(dim=1)

        active_NF = latents_NF != 0
        self.squared_error.add(per_context((x_ND - x_hat_ND).pow(2).sum(dim=1)))
        self.squared_norm.add(per_context(x_ND.pow(2).sum(dim=1)))
        self.sum_CD.add(per_context(x_ND))
        self.active_latents.add(per_context(active_NF.sum(dim=1)))
        self.fired_F += active_NF.sum(dim=0)
        self.tokens.add(ordinary_BT.sum(dim=1))

    def add_predictions(self, predict_BT: Tensor, ce_sae_BT: Tensor, kl_BT: Tensor) -> None:
        """The spliced LM's next-token cross-entropy and its KL from the clean LM at each position."""
        self.ce_sae.add(summed_over_predictions(ce_sae_BT, predict_BT))
        self.kl.add(summed_over_predictions(kl_BT, predict_BT))
        self.predictions.add(predict_BT.sum(dim=1))

    def finish(self, ce_clean_C: Tensor, ce_zero_C: Tensor) -> HeldOutMetrics:
        """The metrics and their standard errors, given each context's summed clean and
        zero-ablated cross-entropy (reference_passes.py: they do not depend on the SAE)."""
        tokens_C, predictions_C = self.tokens.vector(), self.predictions.vector()
        n_tokens, n_predictions = int(tokens_C.sum()), int(predictions_C.sum())
        if n_tokens == 0 or n_predictions == 0:
            raise ValueError("the held-out set has no ordinary tokens to evaluate on")
        squared_error_C, squared_norm_C = self.squared_error.vector(), self.squared_norm.vector()
        sum_CD = self.sum_CD.vector()
        sum_D = sum_CD.sum(dim=0)
        fvu = metrics.fraction_of_variance_unexplained(
            float(squared_error_C.sum()), sum_D, float(squared_norm_C.sum()), n_tokens
        )
        # Each context's variance about the pooled mean; these sum to the FVU's denominator.
        mean_D = sum_D / n_tokens
        variance_C = squared_norm_C - 2 * sum_CD @ mean_D + tokens_C * float(mean_D.pow(2).sum())
        fvu_se = metrics.ratio_standard_error(squared_error_C, variance_C)
        ce_sae_C, kl_C = self.ce_sae.vector(), self.kl.vector()
        ce_clean, ce_zero = float(ce_clean_C.sum()) / n_predictions, float(ce_zero_C.sum()) / n_predictions
        ce_sae = float(ce_sae_C.sum()) / n_predictions
        frequency_F = (self.fired_F / n_tokens).float().cpu()
        ratio_se = metrics.ratio_standard_error
        return HeldOutMetrics(
            l0=float(self.active_latents.vector().sum()) / n_tokens,
            fvu=fvu,
            explained_variance=1 - fvu,
            ce_loss_clean=ce_clean,
            ce_loss_sae=ce_sae,
            ce_loss_zero_ablation=ce_zero,
            ce_loss_increase=metrics.ce_loss_increase(ce_sae, ce_clean),
            ce_loss_recovered=metrics.ce_loss_recovered(ce_clean, ce_sae, ce_zero),
            kl=float(kl_C.sum()) / n_predictions,
            dense_fraction=metrics.dense_fraction(frequency_F),
            eval_tokens=n_tokens,
            feature_density_histogram=metrics.feature_density_histogram(frequency_F),
            standard_errors={
                "l0": ratio_se(self.active_latents.vector(), tokens_C),
                "fvu": fvu_se,
                "explained_variance": fvu_se,
                "ce_loss_clean": ratio_se(ce_clean_C, predictions_C),
                "ce_loss_sae": ratio_se(ce_sae_C, predictions_C),
                "ce_loss_zero_ablation": ratio_se(ce_zero_C, predictions_C),
                # Paired: both passes saw the same tokens, so the per-context differences carry the spread.
                "ce_loss_increase": ratio_se(ce_sae_C - ce_clean_C, predictions_C),
                "ce_loss_recovered": ratio_se(ce_zero_C - ce_sae_C, ce_zero_C - ce_clean_C),
                "kl": ratio_se(kl_C, predictions_C),
            },
        )


class Evaluator:
    """Scores SAEs at one hook point on a fixed set of held-out contexts.

    Each evaluation runs only what the SAE changes: the spliced pass from the hook's layer on. The
    residual it starts from, what the KL needs of the clean distribution and the clean and
    zero-ablated cross-entropies come from the reference passes, computed once (reference_passes.py).
    """

    def __init__(
        self, model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, reference: ReferencePasses, batch_contexts: int
    ) -> None:
        if len(reference.resid_NTD) != len(contexts_NT):
            raise ValueError(f"reference passes for {len(reference.resid_NTD)} contexts, evaluating {len(contexts_NT)}")
        self.model, self.hook, self.contexts_NT, self.reference = model, hook, contexts_NT, reference
        self.batch_contexts = batch_contexts

    @torch.no_grad()
    def evaluate(self, sae: SparseAutoencoder, input_scale: float = 1.0, output_scale: float | None = None) -> HeldOutMetrics:
        """The held-out metrics of `sae`, which reads `input_scale` x the activations (and predicts
        `output_scale` x a transcoder's output; None: the input's scale); FVU is the reconstructed activation's."""
        was_training = sae.training
        sae.eval()
        sums = HeldOutSums(sae.d_sae, self.model.device)
        for start in range(0, len(self.contexts_NT), self.batch_contexts):
            batch = slice(start, start + self.batch_contexts)
            self._add_batch(sums, sae, input_scale, input_scale if output_scale is None else output_scale, batch)
        sae.train(was_training)
        return sums.finish(self.reference.ce_clean_N, self.reference.ce_zero_N)

    def _add_batch(self, sums: HeldOutSums, sae: SparseAutoencoder, input_scale: float, output_scale: float, batch: slice) -> None:
        device = self.model.device
        tokens_BT = self.contexts_NT[batch].to(device)
        ordinary_BT = ~self.model.special_token_mask(tokens_BT)
        targets_BT, predict_BT = tokens_BT[:, 1:], next_token_mask(ordinary_BT)
        splice_hook = SpliceHook(sae, self.hook, ordinary_BT, input_scale, output_scale)
        resid_BTD = self.reference.resid_NTD[batch].to(device)
        logits_BTV, unembed_input_BTD = self.model.logits_and_unembed_input(resid_BTD, self.hook.layer, splice_hook.hooks())
        splice = splice_hook.splice
        sums.add_reconstruction(
            splice.target_ND, splice.output.reconstruction_BD, splice.output.latents_BF, ordinary_BT, output_scale
        )
        sums.add_predictions(predict_BT, *self._cross_entropy_and_kl(logits_BTV, unembed_input_BTD, targets_BT, batch))

    def _cross_entropy_and_kl(self, logits_BTV: Tensor, unembed_input_BTD: Tensor, targets_BT: Tensor, batch: slice) -> tuple[Tensor, Tensor]:
        """The spliced LM's next-token cross-entropy and KL(clean || spliced) at positions 0..T-2."""
        device = self.model.device
        ce_BT, logsumexp_BT = next_token_cross_entropy(logits_BTV, targets_BT)
        if not self.reference.has_clean_moments:
            clean_lp = next_token_log_probs(self.model.unembed(self.reference.unembed_input_NTD[batch].to(device)))
            return ce_BT, kl_divergence(clean_lp, next_token_log_probs(logits_BTV))
        mean_unembedding_BTD = self.reference.clean_mean_unembedding_NTD[batch, :-1].to(device).double()
        expected_logit_BT = (unembed_input_BTD[:, :-1].double() * mean_unembedding_BTD).sum(dim=-1)
        kl_BT = self.reference.clean_kl_offset_NT[batch, :-1].to(device) - expected_logit_BT + logsumexp_BT.double()
        return ce_BT, kl_BT
