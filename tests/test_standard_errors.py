"""Standard errors of the held-out metrics (docs/method.md#standard-errors): the ratio formula on
hand-computed numbers, paired against unpaired, agreement with a cluster bootstrap over contexts, and
the evaluator's per-context bookkeeping."""

import math

import numpy as np
import pytest
import torch

from sae_sweeps.evaluation.evaluator import Evaluator, HeldOutSums
from sae_sweeps.evaluation.reference_passes import compute_reference_passes
from sae_sweeps.evaluation.metrics import ratio_standard_error
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.splicing import kl_divergence, summed_over_predictions
from sae_sweeps.summary import METRIC_KEYS, SE_KEYS, HeldOutMetrics

f64 = torch.float64


def test_ratio_standard_error_matches_the_formula_worked_by_hand():
    # a = (1, 2, 3), b = (1, 1, 2): R = 6/4 = 1.5; residuals a - R b = (-0.5, 0.5, 0);
    # SE^2 = 3/2 * 0.5 / 16 = 3/64.
    se = ratio_standard_error(torch.tensor([1.0, 2.0, 3.0], dtype=f64), torch.tensor([1.0, 1.0, 2.0], dtype=f64))
    assert se == pytest.approx(math.sqrt(3 / 64))


def test_with_equal_denominators_it_is_the_standard_error_of_the_mean():
    values = torch.tensor([2.0, 4.0, 9.0, 1.0], dtype=f64)
    mean_se = float(values.std(unbiased=True)) / math.sqrt(len(values))
    assert ratio_standard_error(values * 5, torch.full((4,), 5.0, dtype=f64)) == pytest.approx(mean_se)


def test_it_is_nan_with_one_context_or_a_zero_denominator():
    assert math.isnan(ratio_standard_error(torch.tensor([1.0]), torch.tensor([2.0])))
    assert math.isnan(ratio_standard_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -1.0])))


def test_a_paired_difference_is_far_more_certain_than_its_terms_when_the_passes_are_correlated():
    # The SAE pass is the clean pass plus a small shift: contexts differ a lot, the shift hardly at all.
    clean_C = torch.tensor([30.0, 50.0, 20.0, 70.0], dtype=f64)
    sae_C = clean_C + torch.tensor([1.0, 1.2, 0.9, 1.1], dtype=f64)
    counts_C = torch.full((4,), 10.0, dtype=f64)
    paired = ratio_standard_error(sae_C - clean_C, counts_C)
    unpaired = math.hypot(ratio_standard_error(sae_C, counts_C), ratio_standard_error(clean_C, counts_C))
    assert paired == pytest.approx(float((sae_C - clean_C).div(10).std()) / 2)  # hand check: SE of the mean
    assert paired < unpaired / 50


def cluster_bootstrap_se(numerator_C: np.ndarray, denominator_C: np.ndarray, resamples: int, seed: int) -> float:
    """Standard deviation of sum a / sum b over resamples of whole contexts with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(numerator_C), size=(resamples, len(numerator_C)))
    return float((numerator_C[picks].sum(1) / denominator_C[picks].sum(1)).std(ddof=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_ratio_standard_error_agrees_with_a_cluster_bootstrap_over_contexts(seed: int):
    # Contexts of unequal length whose tokens share a context effect (so tokens are correlated within one).
    rng = np.random.default_rng(seed)
    tokens_C = rng.integers(20, 120, size=200).astype("float64")
    context_effect_C = rng.normal(0.0, 0.5, size=200)
    loss_C = np.array([rng.normal(3.0 + effect, 1.0, size=int(n)).sum() for effect, n in zip(context_effect_C, tokens_C)])
    se = ratio_standard_error(torch.from_numpy(loss_C), torch.from_numpy(tokens_C))
    assert se == pytest.approx(cluster_bootstrap_se(loss_C, tokens_C, resamples=4000, seed=seed), rel=0.1)


def test_the_ratio_of_differences_agrees_with_a_bootstrap_too():
    # CE recovered = sum (zero - sae) / sum (zero - clean), with the three passes correlated per context.
    rng = np.random.default_rng(7)
    clean_C = rng.normal(300.0, 60.0, size=150)
    zero_C = clean_C + rng.normal(200.0, 30.0, size=150)
    sae_C = clean_C + rng.normal(20.0, 8.0, size=150)
    numerator_C, denominator_C = zero_C - sae_C, zero_C - clean_C
    se = ratio_standard_error(torch.from_numpy(numerator_C), torch.from_numpy(denominator_C))
    assert se == pytest.approx(cluster_bootstrap_se(numerator_C, denominator_C, resamples=4000, seed=7), rel=0.1)


def test_every_se_metric_has_its_key_right_after_it_in_the_summary_keys():
    assert set(SE_KEYS) == {
        "l0", "fvu", "explained_variance", "ce_loss_clean", "ce_loss_sae", "ce_loss_zero_ablation",
        "ce_loss_increase", "ce_loss_recovered", "kl",
    }
    for name, key in SE_KEYS.items():
        assert METRIC_KEYS[METRIC_KEYS.index(name) + 1] == key


def test_held_out_metrics_refuse_standard_errors_that_do_not_match_the_declaration():
    values = dict(
        l0=1.0, fvu=0.1, explained_variance=0.9, ce_loss_clean=3.0, ce_loss_sae=3.1, ce_loss_zero_ablation=6.0,
        ce_loss_increase=0.1, ce_loss_recovered=0.97, kl=0.05, dense_fraction=0.0, eval_tokens=10,
        feature_density_histogram={},
    )
    with pytest.raises(ValueError, match="standard_errors must name exactly"):
        HeldOutMetrics(**values, standard_errors={"l0": 0.1})


def synthetic_batches(n_batches: int = 3, contexts: int = 4, length: int = 9, d_in: int = 5, d_sae: int = 7):
    """Per batch: ordinary mask, activations, reconstructions, latents and next-token log-probabilities."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n_batches):
        ordinary_BT = torch.rand(contexts, length, generator=generator) > 0.2
        n = int(ordinary_BT.sum())
        x_ND = torch.randn(n, d_in, generator=generator, dtype=f64) + 2.0
        x_hat_ND = x_ND + 0.3 * torch.randn(n, d_in, generator=generator, dtype=f64)
        latents_NF = torch.relu(torch.randn(n, d_sae, generator=generator, dtype=f64))
        targets_BT = torch.randint(0, 6, (contexts, length - 1), generator=generator)
        log_probs = [torch.log_softmax(torch.randn(contexts, length - 1, 6, generator=generator, dtype=f64), -1) for _ in range(3)]
        batches.append((ordinary_BT, x_ND, x_hat_ND, latents_NF, targets_BT, *log_probs))
    return batches


def minus_log_prob_of(log_probs_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Each position's cross-entropy from its log-probabilities."""
    return -log_probs_BTV.gather(-1, targets_BT.unsqueeze(-1)).squeeze(-1)


def test_held_out_sums_give_the_pooled_values_and_per_context_standard_errors():
    batches = synthetic_batches()
    sums = HeldOutSums(d_sae=7, device=torch.device("cpu"))
    ce_clean, ce_zero = [], []
    for ordinary_BT, x_ND, x_hat_ND, latents_NF, targets_BT, clean_lp, sae_lp, zero_lp in batches:
        predict_BT = ordinary_BT[:, :-1] & ordinary_BT[:, 1:]
        sums.add_reconstruction(x_ND, x_hat_ND, latents_NF, ordinary_BT, scale=2.0)
        sums.add_predictions(predict_BT, minus_log_prob_of(sae_lp, targets_BT), kl_divergence(clean_lp, sae_lp))
        ce_clean.append(summed_over_predictions(minus_log_prob_of(clean_lp, targets_BT), predict_BT))
        ce_zero.append(summed_over_predictions(minus_log_prob_of(zero_lp, targets_BT), predict_BT))
    result = sums.finish(torch.cat(ce_clean), torch.cat(ce_zero))

    # Pooled over every token, as the metrics were defined before standard errors existed.
    x = torch.cat([b[1] for b in batches]) / 2.0
    x_hat = torch.cat([b[2] for b in batches]) / 2.0
    assert result.fvu == pytest.approx(float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-12)
    assert result.l0 == pytest.approx(float((torch.cat([b[3] for b in batches]) != 0).sum(1).double().mean()), rel=1e-12)
    assert result.eval_tokens == len(x)
    ce = {name: [] for name in ("clean", "sae", "zero")}
    for ordinary_BT, _, _, _, targets_BT, *log_probs in batches:
        predict_BT = ordinary_BT[:, :-1] & ordinary_BT[:, 1:]
        for name, lp in zip(ce, log_probs):
            ce[name].append(-lp.gather(-1, targets_BT.unsqueeze(-1)).squeeze(-1)[predict_BT])
    mean = {name: float(torch.cat(values).mean()) for name, values in ce.items()}
    assert result.ce_loss_sae == pytest.approx(mean["sae"], rel=1e-12)
    assert result.ce_loss_increase == pytest.approx(mean["sae"] - mean["clean"], rel=1e-12)
    assert result.ce_loss_recovered == pytest.approx((mean["zero"] - mean["sae"]) / (mean["zero"] - mean["clean"]), rel=1e-12)

    # Per context: 12 contexts, each its own sums; the FVU's per-context variances about the pooled mean.
    per_context_error = torch.cat([
        torch.stack([((b[1] - b[2]) / 2.0).pow(2).sum(1)[row].sum() for row in _rows_of_contexts(b[0])]) for b in batches
    ])
    per_context_variance = torch.cat([
        torch.stack([(b[1] / 2.0 - x.mean(0)).pow(2).sum(1)[row].sum() for row in _rows_of_contexts(b[0])]) for b in batches
    ])
    assert float(per_context_variance.sum()) == pytest.approx(float((x - x.mean(0)).pow(2).sum()), rel=1e-12)
    assert result.standard_errors["fvu"] == pytest.approx(ratio_standard_error(per_context_error, per_context_variance))
    assert result.standard_errors["explained_variance"] == result.standard_errors["fvu"]
    assert all(se > 0 and math.isfinite(se) for se in result.standard_errors.values())


def _rows_of_contexts(ordinary_BT: torch.Tensor) -> list[torch.Tensor]:
    """For each context, which rows of the batch's ordinary-token matrix are its tokens."""
    context_N = torch.arange(len(ordinary_BT)).repeat_interleave(ordinary_BT.sum(1))
    return [context_N == context for context in range(len(ordinary_BT))]


def evaluator(model, hook: HookPoint, contexts_NT: torch.Tensor, batch_contexts: int) -> Evaluator:
    reference = compute_reference_passes(model, hook, contexts_NT, batch_contexts)
    return Evaluator(model, hook, contexts_NT, reference, batch_contexts)


def test_the_evaluator_gives_the_same_metrics_and_standard_errors_however_contexts_are_batched(tiny_model):
    generator = torch.Generator().manual_seed(0)
    contexts_NT = torch.randint(0, tiny_model.vocab_size, (6, 16), generator=generator)
    contexts_NT[:, 0] = tiny_model.bos_token_id
    hook = HookPoint.parse("blocks.1.hook_resid_pre")
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=64, d_sae=128)
    one_by_one = evaluator(tiny_model, hook, contexts_NT, batch_contexts=1).evaluate(sae)
    in_fours = evaluator(tiny_model, hook, contexts_NT, batch_contexts=4).evaluate(sae)
    assert one_by_one.scalars() == pytest.approx(in_fours.scalars(), rel=1e-5, abs=1e-9)
    assert all(math.isfinite(se) and se > 0 for se in in_fours.standard_errors.values())


def test_a_held_out_set_without_ordinary_tokens_is_a_clear_error():
    sums = HeldOutSums(d_sae=7, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="no ordinary tokens"):
        sums.finish(torch.zeros(0, dtype=f64), torch.zeros(0, dtype=f64))
