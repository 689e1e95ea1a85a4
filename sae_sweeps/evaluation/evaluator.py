"""Evaluation on held-out contexts: reconstruction, sparsity and what the SAE costs the LM."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from sae_sweeps.evaluation import metrics
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.splicing import next_token_log_probs, next_token_mask, splice_sae, zero_ablate


@dataclass
class EvalMetrics:
    """Held-out metrics of one SAE (names are the keys of summary.json and of the logged metrics)."""

    l0: float
    """Mean number of active latents per token."""
    fvu: float
    """Fraction of variance unexplained, about the mean."""
    explained_variance: float
    """1 - fvu."""
    ce_loss_clean: float
    """Next-token cross-entropy of the unmodified LM (nats)."""
    ce_loss_sae: float
    """Cross-entropy with the SAE's reconstruction spliced in at the hook."""
    ce_loss_zero_ablation: float
    """Cross-entropy with the hook's activation set to zero."""
    ce_loss_increase: float
    """ce_loss_sae - ce_loss_clean."""
    ce_loss_recovered: float
    """(ce_zero - ce_sae) / (ce_zero - ce_clean)."""
    kl: float
    """Mean per-token KL(P_clean || P_sae) in nats."""
    dense_fraction: float
    """Fraction of latents firing on more than 10% of held-out tokens."""
    eval_tokens: int
    """Ordinary (non-special) held-out tokens the metrics average over."""
    feature_density_histogram: dict = field(repr=False)
    """log10 firing-frequency histogram over held-out tokens."""

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "feature_density_histogram"}


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

    @torch.no_grad()
    def evaluate(self, sae: SparseAutoencoder, input_scale: float = 1.0) -> EvalMetrics:
        was_training = sae.training
        sae.eval()
        device = self.model.device
        sums = dict(err=0.0, sq=0.0, ce_clean=0.0, ce_sae=0.0, ce_zero=0.0, kl=0.0, l0=0.0)
        sum_D = torch.zeros(sae.d_in, dtype=torch.float64, device=device)
        fired_F = torch.zeros(sae.d_sae, dtype=torch.float64, device=device)
        n_tokens = n_predictions = 0
        for tokens_BT in self.contexts_NT.split(self.batch_contexts):
            tokens_BT = tokens_BT.to(device)
            ordinary_BT = ~self.model.special_token_mask(tokens_BT)
            predict_BT = next_token_mask(ordinary_BT)
            targets_BT = tokens_BT[:, 1:]
            resid_BTD = self.model.residual_before(tokens_BT, self.hook.layer)
            captured: dict[str, object] = {}

            def splice_hook(acts_BTD: Tensor, hook: object) -> Tensor:
                captured["splice"] = splice_sae(sae, acts_BTD, ordinary_BT, input_scale)
                return captured["splice"].spliced_BTD

            clean_lp = next_token_log_probs(self.model.logits_from(resid_BTD, self.hook.layer))
            sae_lp = next_token_log_probs(
                self.model.logits_from(resid_BTD, self.hook.layer, [(self.hook.name, splice_hook)])
            )
            splice = captured["splice"]
            x_ND = splice.sae_input_ND.double() / input_scale
            x_hat_ND = splice.output.reconstruction_BD.double() / input_scale
            sums["err"] += float((x_ND - x_hat_ND).pow(2).sum())
            sums["sq"] += float(x_ND.pow(2).sum())
            sum_D += x_ND.sum(dim=0)
            active_NF = splice.output.latents_BF != 0
            sums["l0"] += float(active_NF.sum())
            fired_F += active_NF.sum(dim=0)
            n_tokens += len(x_ND)

            sums["ce_clean"] += float(metrics.cross_entropy(clean_lp, targets_BT)[predict_BT].sum())
            sums["ce_sae"] += float(metrics.cross_entropy(sae_lp, targets_BT)[predict_BT].sum())
            sums["kl"] += float(metrics.kl_divergence(clean_lp, sae_lp)[predict_BT].sum())
            del clean_lp, sae_lp
            if self._baseline is None:
                zero_hook = lambda acts_BTD, hook: zero_ablate(acts_BTD, ordinary_BT)  # noqa: E731
                zero_lp = next_token_log_probs(
                    self.model.logits_from(resid_BTD, self.hook.layer, [(self.hook.name, zero_hook)])
                )
                sums["ce_zero"] += float(metrics.cross_entropy(zero_lp, targets_BT)[predict_BT].sum())
            n_predictions += int(predict_BT.sum())
        if n_tokens == 0 or n_predictions == 0:
            raise ValueError("the held-out set has no ordinary tokens to evaluate on")
        if self._baseline is None:
            self._baseline = (sums["ce_clean"] / n_predictions, sums["ce_zero"] / n_predictions)
        ce_clean, ce_zero = self._baseline
        ce_sae = sums["ce_sae"] / n_predictions
        fvu = metrics.fraction_of_variance_unexplained(sums["err"], sum_D, sums["sq"], n_tokens)
        frequency_F = (fired_F / n_tokens).float().cpu()
        sae.train(was_training)
        return EvalMetrics(
            l0=sums["l0"] / n_tokens,
            fvu=fvu,
            explained_variance=1 - fvu,
            ce_loss_clean=ce_clean,
            ce_loss_sae=ce_sae,
            ce_loss_zero_ablation=ce_zero,
            ce_loss_increase=metrics.ce_loss_increase(ce_sae, ce_clean),
            ce_loss_recovered=metrics.ce_loss_recovered(ce_clean, ce_sae, ce_zero),
            kl=sums["kl"] / n_predictions,
            dense_fraction=metrics.dense_fraction(frequency_F),
            eval_tokens=n_tokens,
            feature_density_histogram=metrics.feature_density_histogram(frequency_F),
        )
