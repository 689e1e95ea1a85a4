"""Each metric of docs/method.md#metrics on numbers worked out by hand."""

import math

import pytest
import torch

from sae_sweeps import splicing
from sae_sweeps.evaluation import metrics


def test_fvu_divides_by_variance_about_the_mean_not_about_zero():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)  # mean (2, 3); sum ||x - mean||^2 = 4
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 4.0]], dtype=torch.float64)  # squared error 1
    fvu = metrics.fraction_of_variance_unexplained(1.0, x.sum(0), float(x.pow(2).sum()), 2)
    assert fvu == pytest.approx(1 / 4)
    # Variance about zero (sum ||x||^2 = 30) would have claimed 1/30: docs/method.md#fvu-about-zero.
    assert fvu != pytest.approx(1 / 30)
    assert float((x - x_hat).pow(2).sum()) == 1.0


def test_cross_entropy_is_minus_log_probability_of_target_whatever_the_logits_offset():
    """Property: CE = logsumexp z - z_target = -log p_target for logits z = log p + c (any c per position);
    the last position predicts nothing and is dropped; the log-sum-exp returned is c."""
    log_probs = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]]]))
    offsets = torch.tensor([[[3.0], [-7.0], [1.0]]])
    ce, logsumexp = splicing.next_token_cross_entropy(log_probs + offsets, torch.tensor([[0, 1]]))
    assert torch.allclose(ce, torch.tensor([[math.log(2), -math.log(0.8)]]))
    assert torch.allclose(logsumexp, torch.tensor([[3.0, -7.0]]))


def test_kl_is_clean_to_sae_direction_and_zero_for_equal_distributions():
    p = torch.tensor([0.5, 0.5]).log()
    q = torch.tensor([0.9, 0.1]).log()
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert splicing.kl_divergence(p, q).item() == pytest.approx(expected)
    assert splicing.kl_divergence(q, p).item() != pytest.approx(expected)  # direction matters
    assert splicing.kl_divergence(p, p).item() == pytest.approx(0.0)


def test_ce_loss_increase_and_recovered():
    assert metrics.ce_loss_increase(3.5, 3.0) == pytest.approx(0.5)
    # clean 3, zero-ablated 7, SAE 4: recovers (7 - 4) / (7 - 3) = 0.75 of the gap
    assert metrics.ce_loss_recovered(3.0, 4.0, 7.0) == pytest.approx(0.75)
    assert metrics.ce_loss_recovered(3.0, 3.0, 7.0) == pytest.approx(1.0)
    assert math.isnan(metrics.ce_loss_recovered(3.0, 3.0, 3.0))


def test_dead_and_dense_fractions():
    since_fired = torch.tensor([0, 10, 100, 1000])
    assert metrics.dead_fraction(since_fired, window_tokens=100) == 0.5
    frequency = torch.tensor([0.0, 0.05, 0.2, 0.5])
    assert metrics.dense_fraction(frequency) == 0.5


def test_feature_density_histogram_counts_every_latent_once():
    frequency = torch.tensor([0.0, 0.0, 1e-3, 1e-2, 0.5, 1.0])
    hist = metrics.feature_density_histogram(frequency, n_bins=8, lowest_log10=-8.0)
    assert hist["never_fired"] == 2
    assert sum(hist["counts"]) == 4
    assert len(hist["log10_bin_edges"]) == 9
