"""BatchTopK SAE (Bussmann et al. 2024): the top k*B activations of the whole batch during
training, one global threshold at inference, exported as a JumpReLU SAE."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from sae_sweeps.saes.base import SAEOutput
from sae_sweeps.saes.jumprelu import JumpReLUSAE
from sae_sweeps.saes.topk import TopKSAE, per_token_topk_error


def keep_batch_top_k(pre_acts_BF: Tensor, k: int) -> Tensor:
    """ReLU, then keep the k * B largest entries of the flattened batch and zero the rest."""
    acts_BF = torch.relu(pre_acts_BF)
    flat = acts_BF.flatten()
    n_keep = min(k * acts_BF.shape[0], flat.numel())
    values, indices = flat.topk(n_keep, sorted=False)
    return torch.zeros_like(flat).scatter_(0, indices, values).view_as(acts_BF)


def threshold_activation(pre_acts_BF: Tensor, threshold: Tensor) -> Tensor:
    """z * H(z - threshold): the inference rule, identical to the exported JumpReLU's forward."""
    return pre_acts_BF * (pre_acts_BF > threshold).to(pre_acts_BF.dtype)


class BatchTopKSAE(TopKSAE):
    """Training: top k*B over the flattened batch (L0 is k on average, varying per token).
    Evaluation (`eval()`): f = z * H(z - threshold) with one scalar threshold, an EMA of the
    smallest activation kept in each training batch, so outputs do not depend on the batch.
    AuxK revives dead latents as for TopK (inherited), and a pull raises dead latents' encoder
    biases until they fire again (`dead_bias_pull`).

    Per-token term: `per_token_weight` x ||x - decode(TopK_k(z))||^2, the same dictionary's
    reconstruction from each token's own k largest pre-activations (Gao et al. 2024's TopK loss; a
    weighted sum of TopK losses at other selections is their Multi-TopK). Why: under the batch
    budget alone a latent gets no gradient until its pre-activation beats the batch's k*B-th
    largest, so a feature with small activations is learned only if some latent already detects it
    well; the per-token term hands the slots of quiet tokens to weak latents, as TopK does, while the
    main term keeps the batch budget (and its threshold) calibrated across tokens. On synthetic data
    with known features (docs/results.md#synthetic-recovery) BatchTopK alone found 57% of them,
    continued from a trained TopK SAE it kept 88%: its obstacle is exploration, not its objective.
    The weight is set per preset (batchtopk: 16, matryoshka: its yaml): on that benchmark 1 / 3 / 8 /
    16 found 81 / 86 / 88 / 91% (FVU 0.118 / 0.120 / 0.124 / 0.127: more weight makes it more
    TopK-like); on the default model at T = 32 the CE increase fell from 0.94 without the term to
    0.76 at 3 and 0.73 at 8 and 16 (the main term still sets the batch threshold). Training a first part of the run per token
    instead reached 90% but broke 97-step runs (the batch budget must then recalibrate across
    tokens after the switch). It costs one more decode per step.

    The EMA's decay warms up as min(threshold_decay, (1 + n) / (10 + n)) after n updates: early
    batches, whose activations the SAE has since moved away from, are forgotten within ~n/10
    steps, so short runs do not export a stale threshold (with a fixed 0.99, the first batch
    still weighs 38% after 100 steps); long runs use threshold_decay itself."""

    architecture: ClassVar[str] = "batchtopk"
    saelens_architecture: ClassVar[str] = "jumprelu"  # its saved (inference) form
    activation_unit_params: ClassVar[tuple[str, ...]] = ("b_enc", "b_dec", "threshold")
    local_reconstruction_weight: ClassVar[float] = 1.0
    """The batch budget is shared by the batch's tokens, and only the local error of the batch selection
    says which tokens need its slots. Under e2e alone the budget drained to the 2.3% of tokens with
    norms > 300 (attention-sink-like, whose reconstruction the next layers' normalisation makes cheap
    to get wrong): at T = 32 on the default model they held 1357 latents each, the other tokens 1.4,
    FVU 25.6 (docs/results.md#batchtopk-under-e2e). With weight 1 every loss keeps the local
    recipe's balance between the batch term and the per-token and auxiliary terms."""
    dead_bias_pull: ClassVar[float] = 1e-3
    """Weight of minus the sum of the dead latents' encoder biases in the auxiliary loss. A dead
    latent's pre-activations stay below the batch's cut-off, and mostly below zero, where AuxK's
    ReLU'd code gives them no gradient either; raising its bias lowers its effective threshold until
    it fires, as JumpReLU's dead thresholds are lowered (under Adam the weight hardly matters: ~lr
    per step). 0 switches it off."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        threshold_decay: float = 0.99,
        per_token_weight: float = 0.0,
        d_out: int | None = None,
        skip: bool = False,
    ) -> None:
        super().__init__(d_in, d_sae, k, aux_k, aux_coefficient, d_out, skip)
        self.threshold_decay = float(threshold_decay)
        self.per_token_weight = float(per_token_weight)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def enable_fast_path(self, setting: bool | str, device: torch.device) -> bool:
        return False  # the batch-level selection has no per-token sparse decode

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        if not self.training:
            return threshold_activation(pre_acts_BF, self.threshold)
        latents_BF = keep_batch_top_k(pre_acts_BF, self.k)
        self._update_threshold(latents_BF)
        return latents_BF

    def auxiliary_loss(self, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor) -> Tensor:
        """AuxK, the pull on dead latents' biases (`dead_bias_pull`) and the per-token term."""
        loss = super().auxiliary_loss(x_BD, out, dead_latents_F) - self.dead_bias_pull * (self.b_enc * dead_latents_F).sum()
        if self.per_token_weight:
            loss = loss + self.per_token_weight * self.per_token_error(x_BD, out)
        return loss

    def per_token_error(self, x_BD: Tensor, out: SAEOutput) -> Tensor:
        """The term `per_token_weight` multiplies: this dictionary's error as a TopK SAE."""
        return per_token_topk_error(self, x_BD, out, self.k)

    @torch.no_grad()
    def _update_threshold(self, latents_BF: Tensor) -> None:
        kept = latents_BF[latents_BF > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min().to(self.threshold.dtype)
        n = int(self.threshold_updates)
        decay = min(self.threshold_decay, (1 + n) / (10 + n)) if n > 0 else 0.0
        self.threshold.lerp_(smallest, 1 - decay)
        self.threshold_updates += 1

    def init_kwargs(self) -> dict[str, Any]:
        return super().init_kwargs() | {"threshold_decay": self.threshold_decay, "per_token_weight": self.per_token_weight}

    def inference_form(self) -> JumpReLUSAE:
        """A JumpReLU SAE whose every latent has the tracked scalar threshold."""
        exported = JumpReLUSAE(**self.shape_kwargs()).to(self.W_dec.device)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec") + (("W_skip",) if self.W_skip is not None else ()):
                getattr(exported, name).copy_(getattr(self, name))
            exported.threshold.fill_(float(self.threshold))
        return exported.eval()
