"""The metrics of docs/method.md#metrics, as small pure functions (tested on hand-computed numbers)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

DENSE_FIRING_FREQUENCY = 0.1
"""A latent firing on more than this fraction of tokens counts as dense."""


def fraction_of_variance_unexplained(
    squared_error_sum: float, sum_D: Tensor, squared_norm_sum: float, n_tokens: int
) -> float:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 from running sums (variance about the mean,
    not about zero: the latter flatters every SAE on residual streams)."""
    mean_D = sum_D / n_tokens
    total_variance = squared_norm_sum - n_tokens * float(mean_D.pow(2).sum())
    return squared_error_sum / total_variance if total_variance > 0 else math.nan


def ce_loss_increase(ce_loss_sae: float, ce_loss_clean: float) -> float:
    """How much worse the LM predicts with the SAE spliced in ("delta LM loss")."""
    return ce_loss_sae - ce_loss_clean


def ce_loss_recovered(ce_loss_clean: float, ce_loss_sae: float, ce_loss_zero_ablation: float) -> float:
    """(CE_zero - CE_sae) / (CE_zero - CE_clean): 1 is perfect, 0 is no better than zeroing."""
    gap = ce_loss_zero_ablation - ce_loss_clean
    return (ce_loss_zero_ablation - ce_loss_sae) / gap if gap != 0 else math.nan


def dead_fraction(tokens_since_fired_F: Tensor, window_tokens: int) -> float:
    """Fraction of latents that did not fire in the last `window_tokens` tokens."""
    return (tokens_since_fired_F >= window_tokens).float().mean().item()


def dense_fraction(firing_frequency_F: Tensor) -> float:
    """Fraction of latents firing on more than 10% of tokens."""
    return (firing_frequency_F > DENSE_FIRING_FREQUENCY).float().mean().item()


def feature_density_histogram(firing_frequency_F: Tensor, n_bins: int = 40, lowest_log10: float = -8.0) -> dict:
    """Histogram of log10 firing frequencies; latents that never fired are counted separately."""
    fired = firing_frequency_F[firing_frequency_F > 0]
    edges = torch.linspace(lowest_log10, 0.0, n_bins + 1)
    counts = torch.histc(fired.log10().clamp(lowest_log10, 0.0).float().cpu(), bins=n_bins, min=lowest_log10, max=0.0)
    return {
        "log10_bin_edges": [round(e, 4) for e in edges.tolist()],
        "counts": [int(c) for c in counts.tolist()],
        "never_fired": int((firing_frequency_F == 0).sum()),
    }


def ratio_standard_error(numerator_C: Tensor, denominator_C: Tensor) -> float:
    """Standard error over contexts of R = sum_c a_c / sum_c b_c (docs/method.md#standard-errors).

    The contexts are the sampled unit (tokens within one are correlated); the delta method gives
    SE^2 = n/(n-1) * sum_c (a_c - R b_c)^2 / (sum_c b_c)^2. A paired metric passes per-context
    differences as `a`, so what both passes share cancels before the spread is taken. NaN with
    fewer than two contexts or a zero denominator.
    """
    n_contexts = len(numerator_C)
    total = float(denominator_C.sum())
    if n_contexts < 2 or total == 0:
        return math.nan
    ratio = float(numerator_C.sum()) / total
    residual_C = numerator_C.double() - ratio * denominator_C.double()
    return math.sqrt(n_contexts / (n_contexts - 1) * float(residual_C.pow(2).sum())) / abs(total)
