"""The passes over the held-out set that no SAE changes, computed once and shared.

Every evaluation splices an SAE into the LM from the hook's layer on, and compares it with the
clean LM and the LM with the hook zero-ablated. Three of those quantities do not depend on the SAE:
the residual where the spliced pass starts, what the KL needs of the clean next-token distribution,
and the clean and zero-ablated cross-entropy of each context. A run computes
them once for all its evaluations; with a cache directory, every run that evaluates on the same
held-out contexts of the same model and hook reads them from disk, keyed and verified as the
activation cache is (shared_tensors.py, docs/activation_cache.md).

The KL needs no clean logits at evaluation time when the logits are affine in the unembedding's
input h, z(h) = A h + b (every model without a logit soft cap). With the clean distribution p,

    KL(p || softmax(z(h))) = sum_v p_v log p_v - sum_v p_v z_v(h) + logsumexp z(h)
                           = kl_offset - h . (A^T p) + logsumexp z(h),

where kl_offset = sum_v p_v (log p_v - b_v): per position one vector A^T p (the clean
distribution's mean unembedding row) and one number, against a second [vocab x d_model] matmul
and two more passes over the vocabulary per held-out token (docs/method.md#metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sae_sweeps.evaluation.shared_tensors import cached_tensors, lm_pass_key
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.splicing import next_token_cross_entropy, next_token_mask, summed_over_predictions, zero_ablate

FORMAT_VERSION = 4
TENSORS = ("resid_NTD", "unembed_input_NTD", "ce_clean_N", "ce_zero_N", "clean_mean_unembedding_NTD", "clean_kl_offset_NT")


class ReferencePasses(NamedTuple):
    """What the held-out contexts give without an SAE, one row per context, on the CPU."""

    resid_NTD: Tensor
    """resid_pre of the hook's layer: where every spliced pass starts."""
    unembed_input_NTD: Tensor
    """The clean pass's input to the unembedding, from which a soft-capped model's KL takes the clean logits
    (`model.unembed` of it; [N, 0, 0] when the clean moments below stand in for them)."""
    ce_clean_N: Tensor
    """Summed next-token cross-entropy of the clean LM in each context (float64)."""
    ce_zero_N: Tensor
    """Summed next-token cross-entropy with the hook zero-ablated in each context (float64)."""
    clean_mean_unembedding_NTD: Tensor
    """A^T p at each position: the unembedding's rows averaged under the clean next-token distribution
    ([N, 0, 0] when the logits are not affine in the unembedding's input: the KL then needs the clean logits)."""
    clean_kl_offset_NT: Tensor
    """sum_v p_v (log p_v - b_v) at each position, in float64 ([N, 0] with the above)."""

    @property
    def has_clean_moments(self) -> bool:
        """Whether the KL can skip the clean logits (module docstring)."""
        return self.clean_mean_unembedding_NTD.numel() > 0

    def first(self, n_contexts: int) -> ReferencePasses:
        """The same passes for the first `n_contexts` contexts."""
        return ReferencePasses(*(tensor[:n_contexts] for tensor in self))


@torch.no_grad()
def compute_reference_passes(
    model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int
) -> ReferencePasses:
    """Run the clean and the zero-ablated LM over the held-out contexts, `batch_contexts` at a time."""
    parts: dict[str, list[Tensor]] = {name: [] for name in TENSORS}
    for tokens_BT in contexts_NT.split(batch_contexts):
        tokens_BT = tokens_BT.to(model.device)
        ordinary_BT = ~model.special_token_mask(tokens_BT)
        targets_BT, predict_BT = tokens_BT[:, 1:], next_token_mask(ordinary_BT)
        resid_BTD = model.residual_before(tokens_BT, hook.layer)
        clean_logits, unembed_input_BTD = model.logits_and_unembed_input(resid_BTD, hook.layer)
        zero_hook = lambda acts_BTD, hook: zero_ablate(acts_BTD, ordinary_BT)  # noqa: E731
        zero_logits = model.logits_from(resid_BTD, hook.layer, [(hook.writes, zero_hook)])
        # Each KL route stores only what it reads (module docstring).
        none_BTD, none_BT = resid_BTD.new_zeros(len(resid_BTD), 0, 0), resid_BTD.new_zeros(len(resid_BTD), 0)
        if model.logits_affine_in_unembed_input:
            mean_unembedding_BTD, kl_offset_BT = clean_moments(model, unembed_input_BTD, clean_logits)
            unembed_input_BTD = none_BTD
        else:
            mean_unembedding_BTD, kl_offset_BT = none_BTD, none_BT
        for name, value in (
            ("resid_NTD", resid_BTD),
            ("unembed_input_NTD", unembed_input_BTD),
            ("ce_clean_N", _summed_cross_entropy(clean_logits, targets_BT, predict_BT)),
            ("ce_zero_N", _summed_cross_entropy(zero_logits, targets_BT, predict_BT)),
            ("clean_mean_unembedding_NTD", mean_unembedding_BTD),
            ("clean_kl_offset_NT", kl_offset_BT),
        ):
            parts[name].append(value.cpu())
    return ReferencePasses(*(torch.cat(parts[name]) for name in TENSORS))


def clean_moments(model: LanguageModel, unembed_input_BTD: Tensor, clean_logits_BTV: Tensor) -> tuple[Tensor, Tensor]:
    """(A^T p, sum_v p_v (log p_v - b_v)) at every position, for logits z(h) = A h + b (module docstring).

    A^T p is the gradient of p . z(h) with respect to h, so it needs no access to the weights; then
    b . p = p . z(h_clean) - h_clean . A^T p.
    """
    log_p_BTV = torch.log_softmax(clean_logits_BTV.float(), dim=-1)
    p_BTV = log_p_BTV.exp()
    with torch.enable_grad():
        h_BTD = unembed_input_BTD.detach().float().requires_grad_()
        (model.unembed(h_BTD).float() * p_BTV).sum().backward()
    mean_unembedding_BTD = h_BTD.grad
    expected_logit_BT = (p_BTV * clean_logits_BTV.float()).sum(dim=-1).double()
    expected_bias_BT = expected_logit_BT - (unembed_input_BTD.double() * mean_unembedding_BTD.double()).sum(dim=-1)
    return mean_unembedding_BTD, (p_BTV * log_p_BTV).sum(dim=-1).double() - expected_bias_BT


def _summed_cross_entropy(logits_BTV: Tensor, targets_BT: Tensor, predict_BT: Tensor) -> Tensor:
    return summed_over_predictions(next_token_cross_entropy(logits_BTV, targets_BT)[0], predict_BT)


def reference_passes_key(cache_fields: dict[str, Any], contexts_NT: Tensor, batch_contexts: int) -> dict[str, Any]:
    """Everything the reference passes depend on: the activation cache's fields (model weights,
    tokenizer, hook, data, numerics), the held-out tokens themselves, and the forward batch."""
    return lm_pass_key("reference_passes", FORMAT_VERSION, cache_fields, contexts_NT, batch_contexts)


def cached_reference_passes(
    root: Path, key_fields: dict[str, Any], model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int
) -> ReferencePasses:
    """The reference passes from `root/<key>/`, computed and written there first if absent or damaged
    (shared_tensors.py)."""
    compute = lambda: compute_reference_passes(model, hook, contexts_NT, batch_contexts)  # noqa: E731
    return ReferencePasses(*cached_tensors(root, key_fields, TENSORS, compute, "the clean and zero-ablated passes"))
