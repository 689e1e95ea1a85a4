"""Evaluation on held-out contexts: reconstruction, sparsity and what the SAE costs the LM."""

from __future__ import annotations

import torch
from torch import Tensor

from sae_sweeps.evaluation import metrics
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.splicing import SpliceHook, cross_entropy, kl_divergence, next_token_log_probs, next_token_mask, zero_ablate
from sae_sweeps.summary import HeldOutMetrics


class HeldOutSums:
    """Running sums over held-out batches, in float64; `finish` turns them into `HeldOutMetrics`."""

    def __init__(self, d_in: int, d_sae: int, device: torch.device) -> None:
        self.squared_error = 0.0
        self.squared_norm = 0.0
        self.sum_D = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.fired_F = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.active_latents = 0.0
        self.n_tokens = 0
        self.ce_clean = self.ce_sae = self.ce_zero = self.kl = 0.0
        self.n_predictions = 0

    def add_reconstruction(self, x_ND: Tensor, x_hat_ND: Tensor, latents_NF: Tensor, input_scale: float) -> None:
        """Ordinary tokens' activations and reconstructions as the SAE saw them (scaled), and their codes."""
        x_ND, x_hat_ND = x_ND.double() / input_scale, x_hat_ND.double() / input_scale
        self.squared_error += float((x_ND - x_hat_ND).pow(2).sum())
        self.squared_norm += float(x_ND.pow(2).sum())
        self.sum_D += x_ND.sum(dim=0)
        active_NF = latents_NF != 0
        self.active_latents += float(active_NF.sum())
        self.fired_F += active_NF.sum(dim=0)
        self.n_tokens += len(x_ND)

    def add_predictions(self, targets_BT: Tensor, predict_BT: Tensor, clean_lp: Tensor, sae_lp: Tensor) -> None:
        """Next-token log-probabilities of the clean and the spliced LM."""
        self.ce_clean += float(cross_entropy(clean_lp, targets_BT)[predict_BT].sum())
        self.ce_sae += float(cross_entropy(sae_lp, targets_BT)[predict_BT].sum())
        self.kl += float(kl_divergence(clean_lp, sae_lp)[predict_BT].sum())
        self.n_predictions += int(predict_BT.sum())

    def add_zero_ablation(self, targets_BT: Tensor, predict_BT: Tensor, zero_lp: Tensor) -> None:
        """Next-token log-probabilities of the LM with the hook zeroed (first evaluation only)."""
        self.ce_zero += float(cross_entropy(zero_lp, targets_BT)[predict_BT].sum())

    def finish(self, ce_clean: float, ce_zero: float) -> HeldOutMetrics:
        """The metrics, given the SAE-independent clean and zero-ablated cross-entropies."""
        if self.n_tokens == 0 or self.n_predictions == 0:
            raise ValueError("the held-out set has no ordinary tokens to evaluate on")
        fvu = metrics.fraction_of_variance_unexplained(self.squared_error, self.sum_D, self.squared_norm, self.n_tokens)
        ce_sae = self.ce_sae / self.n_predictions
        frequency_F = (self.fired_F / self.n_tokens).float().cpu()
        return HeldOutMetrics(
            l0=self.active_latents / self.n_tokens,
            fvu=fvu,
            explained_variance=1 - fvu,
            ce_loss_clean=ce_clean,
            ce_loss_sae=ce_sae,
            ce_loss_zero_ablation=ce_zero,
            ce_loss_increase=metrics.ce_loss_increase(ce_sae, ce_clean),
            ce_loss_recovered=metrics.ce_loss_recovered(ce_clean, ce_sae, ce_zero),
            kl=self.kl / self.n_predictions,
            dense_fraction=metrics.dense_fraction(frequency_F),
            eval_tokens=self.n_tokens,
            feature_density_histogram=metrics.feature_density_histogram(frequency_F),
        )


class Evaluator:
    """Scores SAEs at one hook point on a fixed set of held-out contexts.

    The LM prefix up to the hook's layer runs once per batch and serves the clean, spliced and
    zero-ablated passes; clean and zero-ablated cross-entropies do not depend on the SAE and are
    computed once.
    """

    def __init__(self, model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int) -> None:
        self.model, self.hook = model, hook
        self.contexts_NT, self.batch_contexts = contexts_NT, batch_contexts
        self._baseline: tuple[float, float] | None = None
        """(CE clean, CE zero-ablated), from the first evaluation."""

    @torch.no_grad()
    def evaluate(self, sae: SparseAutoencoder, input_scale: float = 1.0) -> HeldOutMetrics:
        was_training = sae.training
        sae.eval()
        sums = HeldOutSums(sae.d_in, sae.d_sae, self.model.device)
        for tokens_BT in self.contexts_NT.split(self.batch_contexts):
            self._add_batch(sums, sae, input_scale, tokens_BT.to(self.model.device))
        if self._baseline is None:
            self._baseline = (sums.ce_clean / max(sums.n_predictions, 1), sums.ce_zero / max(sums.n_predictions, 1))
        sae.train(was_training)
        return sums.finish(*self._baseline)

    def _add_batch(self, sums: HeldOutSums, sae: SparseAutoencoder, input_scale: float, tokens_BT: Tensor) -> None:
        ordinary_BT = ~self.model.special_token_mask(tokens_BT)
        targets_BT, predict_BT = tokens_BT[:, 1:], next_token_mask(ordinary_BT)
        layer, name = self.hook.layer, self.hook.name
        resid_BTD = self.model.residual_before(tokens_BT, layer)
        splice_hook = SpliceHook(sae, ordinary_BT, input_scale)
        clean_lp = next_token_log_probs(self.model.logits_from(resid_BTD, layer))
        sae_lp = next_token_log_probs(self.model.logits_from(resid_BTD, layer, [(name, splice_hook)]))
        splice = splice_hook.splice
        sums.add_reconstruction(splice.sae_input_ND, splice.output.reconstruction_BD, splice.output.latents_BF, input_scale)
        sums.add_predictions(targets_BT, predict_BT, clean_lp, sae_lp)
        del clean_lp, sae_lp  # [B, T, vocab] each: the evaluation's memory peak
        if self._baseline is None:
            zero_hook = lambda acts_BTD, hook: zero_ablate(acts_BTD, ordinary_BT)  # noqa: E731
            zero_lp = next_token_log_probs(self.model.logits_from(resid_BTD, layer, [(name, zero_hook)]))
            sums.add_zero_ablation(targets_BT, predict_BT, zero_lp)
