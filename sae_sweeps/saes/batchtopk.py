"""BatchTopK SAE (Bussmann et al. 2024): the top k*B activations of the whole batch during
training, one global threshold at inference, exported as a JumpReLU SAE."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from sae_sweeps.saes.jumprelu import JumpReLUSAE
from sae_sweeps.saes.topk import TopKSAE


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
    AuxK revives dead latents as for TopK (inherited).

    The EMA's decay warms up as min(threshold_decay, (1 + n) / (10 + n)) after n updates: early
    batches, whose activations the SAE has since moved away from, are forgotten within ~n/10
    steps, so short runs do not export a stale threshold (with a fixed 0.99, the first batch
    still weighs 38% after 100 steps); long runs use threshold_decay itself."""

    architecture: ClassVar[str] = "batchtopk"
    saelens_architecture: ClassVar[str] = "jumprelu"  # its saved (inference) form
    activation_unit_params: ClassVar[tuple[str, ...]] = ("b_enc", "b_dec", "threshold")

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        threshold_decay: float = 0.99,
        d_out: int | None = None,
        skip: bool = False,
    ) -> None:
        super().__init__(d_in, d_sae, k, aux_k, aux_coefficient, d_out, skip)
        self.threshold_decay = float(threshold_decay)
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
        return super().init_kwargs() | {"threshold_decay": self.threshold_decay}

    def inference_form(self) -> JumpReLUSAE:
        """A JumpReLU SAE whose every latent has the tracked scalar threshold."""
        exported = JumpReLUSAE(**self.shape_kwargs()).to(self.W_dec.device)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec") + (("W_skip",) if self.W_skip is not None else ()):
                getattr(exported, name).copy_(getattr(self, name))
            exported.threshold.fill_(float(self.threshold))
        return exported.eval()
