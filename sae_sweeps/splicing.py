"""Running an SAE inside the language model: its reconstruction replaces the activation at the
hook point (a transcoder's output hook) on ordinary tokens, while BOS/EOS/padding keep their original activations; and the
next-token quantities that compare the spliced LM with the clean one. The evaluator and the e2e
losses both build on these (docs/method.md#losses, docs/method.md#metrics)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sae_sweeps.models import HookPoint
from sae_sweeps.saes import SAEOutput, SparseAutoencoder


class Splice(NamedTuple):
    """The SAE applied to the ordinary-token activations of one batch of contexts."""

    spliced_BTD: Tensor
    """The written hook's activation with the SAE's output in place at ordinary tokens."""
    sae_input_ND: Tensor
    """The (scaled) activations the SAE saw: one row per ordinary token."""
    target_ND: Tensor
    """What the SAE reconstructs, scaled: its input for an SAE, the (output-scaled) output activation for a transcoder."""
    output: SAEOutput
    """The SAE's output on those rows, in scaled units."""


def splice_sae(
    sae: SparseAutoencoder, input_BTD: Tensor, ordinary_BT: Tensor, input_scale: float,
    output_BTD: Tensor | None = None, output_scale: float | None = None,
) -> Splice:
    """Replace the ordinary tokens' activations at the written hook by the SAE's output on those at the read
    hook (one and the same for an SAE: `output_BTD` None); the SAE works on `input_scale * x` and predicts
    `output_scale * y` (`output_scale` None: the input's scale)."""
    output_scale = input_scale if output_scale is None else output_scale
    sae_input_ND = input_BTD[ordinary_BT] * input_scale
    written_BTD = input_BTD if output_BTD is None else output_BTD
    target_ND = sae_input_ND if output_BTD is None else written_BTD[ordinary_BT] * output_scale
    output = sae(sae_input_ND)
    spliced_BTD = written_BTD.clone()
    spliced_BTD[ordinary_BT] = output.reconstruction_BD.to(written_BTD.dtype) / output_scale
    return Splice(spliced_BTD, sae_input_ND, target_ND, output)


class SpliceHook:
    """The transformer_lens forward hooks that splice an SAE (or transcoder) in at `hook`, keeping the
    `Splice` they made: one hook that reads and replaces for an SAE; for a transcoder one that keeps its
    input and one that replaces its output."""

    def __init__(
        self, sae: SparseAutoencoder, hook: HookPoint, ordinary_BT: Tensor, input_scale: float, output_scale: float | None = None
    ) -> None:
        self.sae, self.hook, self.ordinary_BT = sae, hook, ordinary_BT
        self.input_scale, self.output_scale = input_scale, output_scale
        self._input_BTD: Tensor | None = None
        self._splice: Splice | None = None

    def hooks(self) -> list[tuple[str, object]]:
        if self.hook.output is None:
            return [(self.hook.name, self._replace)]
        return [(self.hook.name, self._keep_input), (self.hook.output, self._replace)]

    def _keep_input(self, acts_BTD: Tensor, hook: object) -> None:
        self._input_BTD = acts_BTD

    def _replace(self, acts_BTD: Tensor, hook: object) -> Tensor:
        if self.hook.output is None:
            self._splice = splice_sae(self.sae, acts_BTD, self.ordinary_BT, self.input_scale)
        else:
            if self._input_BTD is None:
                raise RuntimeError(f"{self.hook.output} fired before the transcoder's input {self.hook.name}")
            self._splice = splice_sae(self.sae, self._input_BTD, self.ordinary_BT, self.input_scale, acts_BTD, self.output_scale)
        return self._splice.spliced_BTD

    @property
    def splice(self) -> Splice:
        if self._splice is None:
            raise RuntimeError("the SAE's hook did not fire in the forward pass")
        return self._splice


def zero_ablate(acts_BTD: Tensor, ordinary_BT: Tensor) -> Tensor:
    """The baseline 'no information at this hook' on the same positions the SAE replaces."""
    return acts_BTD.masked_fill(ordinary_BT.unsqueeze(-1), 0.0)


def next_token_mask(ordinary_BT: Tensor) -> Tensor:
    """[B, T-1]: positions whose own token and next token are both ordinary text."""
    return ordinary_BT[:, :-1] & ordinary_BT[:, 1:]


def next_token_log_probs(logits_BTV: Tensor) -> Tensor:
    """[B, T-1, V] log-distributions that predict tokens 1..T-1, in float32 or wider (float64
    stays float64, so that gradient checks in double precision are meaningful)."""
    dtype = torch.promote_types(logits_BTV.dtype, torch.float32)
    return torch.log_softmax(logits_BTV[:, :-1].to(dtype), dim=-1)


def next_token_cross_entropy(logits_BTV: Tensor, targets_BT: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position next-token cross-entropy in nats, logsumexp_v z_v - z_target, and that
    log-sum-exp (positions 0..T-2, float32 or wider). The held-out CE of every pass goes through
    this one formula, so that equal logits give bit-equal CE (a zero-output SAE's CE is exactly the
    zero-ablated one)."""
    predicting_BTV = logits_BTV[:, :-1].to(torch.promote_types(logits_BTV.dtype, torch.float32))
    logsumexp_BT = predicting_BTV.logsumexp(dim=-1)
    return logsumexp_BT - predicting_BTV.gather(-1, targets_BT.unsqueeze(-1)).squeeze(-1), logsumexp_BT


def kl_divergence(clean_log_probs_BTV: Tensor, sae_log_probs_BTV: Tensor) -> Tensor:
    """Per-position KL(P_clean || P_sae) in nats: the direction the e2e paper's code minimises."""
    return (clean_log_probs_BTV.exp() * (clean_log_probs_BTV - sae_log_probs_BTV)).sum(dim=-1)


def summed_over_predictions(per_position_BT: Tensor, predict_BT: Tensor) -> Tensor:
    """[B]: each context's sum over its predicted positions, in float64."""
    return per_position_BT.double().where(predict_BT, 0.0).sum(dim=1)
