"""The passes over the held-out set that no SAE changes, computed once and shared.

Every evaluation splices an SAE into the LM from the hook's layer on, and compares it with the
clean LM and the LM with the hook zero-ablated. Three of those quantities do not depend on the SAE:
the residual where the spliced pass starts, the clean model's input to its unembedding (from which
the clean next-token distribution, needed for the KL, costs one matmul instead of the whole
suffix of the model), and the clean and zero-ablated cross-entropy of each context. A run computes
them once for all its evaluations; with a cache directory, every run that evaluates on the same
held-out contexts of the same model and hook reads them from disk, keyed and verified as the
activation cache is (shared_tensors.py, docs/activation_cache.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sae_sweeps.evaluation.shared_tensors import cached_tensors, lm_pass_key
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.splicing import cross_entropy, next_token_log_probs, next_token_mask, summed_over_predictions, zero_ablate

FORMAT_VERSION = 1
TENSORS = ("resid_NTD", "unembed_input_NTD", "ce_clean_N", "ce_zero_N")


class ReferencePasses(NamedTuple):
    """What the held-out contexts give without an SAE, one row per context, on the CPU."""

    resid_NTD: Tensor
    """resid_pre of the hook's layer: where every spliced pass starts."""
    unembed_input_NTD: Tensor
    """The clean pass's input to the unembedding: the clean logits are `model.unembed` of it."""
    ce_clean_N: Tensor
    """Summed next-token cross-entropy of the clean LM in each context (float64)."""
    ce_zero_N: Tensor
    """Summed next-token cross-entropy with the hook zero-ablated in each context (float64)."""

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
        for name, value in (
            ("resid_NTD", resid_BTD),
            ("unembed_input_NTD", unembed_input_BTD),
            ("ce_clean_N", _summed_cross_entropy(clean_logits, targets_BT, predict_BT)),
            ("ce_zero_N", _summed_cross_entropy(zero_logits, targets_BT, predict_BT)),
        ):
            parts[name].append(value.cpu())
    return ReferencePasses(*(torch.cat(parts[name]) for name in TENSORS))


def _summed_cross_entropy(logits_BTV: Tensor, targets_BT: Tensor, predict_BT: Tensor) -> Tensor:
    return summed_over_predictions(cross_entropy(next_token_log_probs(logits_BTV), targets_BT), predict_BT)


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
