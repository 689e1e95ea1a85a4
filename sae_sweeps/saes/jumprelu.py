"""JumpReLU SAE (Rajamanoharan et al. 2024): a learned threshold per latent and an L0 penalty,
trained with straight-through pseudo-derivatives (rectangle kernel, bandwidth eps).

f_i = z_i * H(z_i - theta_i), z = W_enc (x - b_dec) + b_enc. Both the jump and the L0 count are
piecewise constant in theta; their pseudo-derivatives (docs/method.md#jumprelu) are
    d/dtheta JumpReLU(z, theta) = -(theta / eps) K((z - theta) / eps)
    d/dtheta H(z - theta)       = -(1 / eps)     K((z - theta) / eps),    K(u) = 1{|u| < 1/2}
and the gradient with respect to z is the ordinary mask H(z - theta) for JumpReLU (and zero for
the step: the L0 term trains the thresholds only).

The threshold is stored raw, not as log(theta): Adam moves a raw parameter by ~lr per step
whatever its size, whereas log-parameterised thresholds move by ~theta * lr and barely respond to
the sparsity coefficient (docs/method.md#log-parameterised-jumprelu-thresholds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from sae_sweeps.saes.base import SAEOutput, SparseAutoencoder, check_target_l0
from sae_sweeps.saes.sparsity import FixedCoefficient, Sparsity, TargetPenalty
from sae_sweeps.saes.topk import dead_latent_terms, per_token_topk_error, target_k

if TYPE_CHECKING:
    from omegaconf import DictConfig


class JumpReLUWithCounts(torch.autograd.Function):
    """(f, firing counts): f = z H(z - theta) and n_i = sum_b H(z_bi - theta_i), in one pass.

    Backward, with K_bi = 1{|z_bi - theta_i| < eps/2} the rectangle kernel:
        df/dz = H(z - theta)        df/dtheta = -(theta/eps) K        dn/dtheta = -(1/eps) sum_b K
    and no gradient from the counts to z (the L0 term trains the thresholds only). One Function
    for both, because at d_sae in the thousands each elementwise pass over the [B, F] code costs
    as much as a sizeable fraction of a matmul (docs/benchmarks.md).
    """

    @staticmethod
    def forward(ctx: Any, z_BF: Tensor, theta_F: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        mask_BF = z_BF > theta_F
        f_BF = z_BF * mask_BF  # a multiply by the bool mask: ~2.5x faster than torch.where on CPU
        # float32 whatever z's dtype: bf16 cannot count past 256 exactly
        counts_F = mask_BF.reshape(-1, mask_BF.shape[-1]).sum(dim=0, dtype=torch.float32)
        ctx.save_for_backward(z_BF, theta_F, mask_BF)
        ctx.eps = eps
        return f_BF, counts_F

    @staticmethod
    def backward(ctx: Any, grad_f_BF: Tensor | None, grad_counts_F: Tensor | None):
        z_BF, theta_F, mask_BF = ctx.saved_tensors
        eps = ctx.eps
        grad_z = grad_theta = None
        if grad_f_BF is not None and ctx.needs_input_grad[0]:
            grad_z = grad_f_BF * mask_BF
        if ctx.needs_input_grad[1]:
            # Few pre-activations fall within eps/2 of their threshold: gather those instead of
            # multiplying and reducing whole [B, F] tensors.
            n_latents = theta_F.shape[0]
            near_BF = (z_BF - theta_F).abs_() < eps / 2
            rows, latents = near_BF.reshape(-1, n_latents).nonzero(as_tuple=True)
            per_entry = torch.zeros_like(rows, dtype=theta_F.dtype)
            if grad_f_BF is not None:
                per_entry += theta_F[latents] * grad_f_BF.reshape(-1, n_latents)[rows, latents]
            if grad_counts_F is not None:
                per_entry += grad_counts_F[latents]
            grad_theta = torch.zeros_like(theta_F).index_add_(0, latents, per_entry).div_(-eps)
        return grad_z, grad_theta, None


class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU SAE with an L0 penalty, or a penalty on the distance of L0 from a target.

    Sparsity loss (the term `sparsity.coefficient` multiplies), L0 being the batch's mean count of
    latents above threshold, differentiable in theta through the step's pseudo-derivative:
    - `target_l0=None`: L0 itself (the paper's penalty); the coefficient is a price per latent.
    - `target_l0=T`: `target_weight * T * (sqrt(d^2 + s^2) - s)` with d = L0/T - 1 and
      s = `target_smoothing`: a smoothed |L0 - T| (pseudo-Huber in the relative error).
      Why this form: its slope in L0 is `target_weight * d / sqrt(d^2 + s^2)`, i.e. at most
      `target_weight` times the plain L0 price, whatever the distance. L0 starts near d_sae / 2,
      tens of times the target, where a squared error (L0/T - 1)^2 would pull hundreds of times
      harder than needed, dominate the clipped gradient norm and stall the rest of the SAE. Within
      ~s of the target it is quadratic, so thresholds settle instead of chattering as they would
      under |L0 - T|. The target lands where the reconstruction's marginal gain per latent, m,
      equals the pull: |d| ~= s / sqrt((coefficient * target_weight / m)^2 - 1), a few percent
      when the pull's ceiling is a few times m; a coefficient that gives L0 <= T in plain mode
      times target_weight >= 3 does that. In target mode the sweep knob is `target_l0`.
    A threshold below zero would let negative pre-activations through, so `normalize_decoder`
    (called by the trainer after every optimiser step) also clamps thresholds at zero.
    """

    architecture: ClassVar[str] = "jumprelu"
    saelens_architecture: ClassVar[str] = "jumprelu"
    default_adam_betas: ClassVar[tuple[float, float]] = (0.0, 0.999)
    activation_unit_params: ClassVar[tuple[str, ...]] = ("b_enc", "b_dec", "threshold")
    threshold_lr_reference_width: ClassVar[int] = 576
    """The input width at which thresholds train at exactly `threshold_lr_scale` x lr (the default
    model's, where the recipe was calibrated); at width d_in the multiple is scaled by
    sqrt(576 / d_in), so that thresholds move the same distance per step relative to the
    pre-activations, whose scale at E||x||^2 = 1 falls as 1/sqrt(d_in)."""
    dead_latent_aux_coefficient: ClassVar[float] = 1 / 32
    """Weight of AuxK on the dead latents (as TopK's `aux_coefficient`; 0 switches it off)."""
    dead_threshold_pull: ClassVar[float] = 1e-3
    """Weight of the sum of the dead latents' thresholds in the auxiliary loss: under Adam its size
    hardly matters (a dead threshold has no other gradient), it lowers them ~lr per step until they
    fire again (0 switches it off)."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        threshold_init: float = 0.001,
        bandwidth: float = 0.001,
        target_l0: float | None = None,
        target_weight: float = 10.0,
        target_smoothing: float = 0.05,
        threshold_lr_scale: float = 1.0,
        per_token_weight: float = 0.0,
        d_out: int | None = None,
        skip: bool = False,
    ) -> None:
        super().__init__(d_in, d_sae, d_out, skip)
        self.threshold_init = float(threshold_init)
        self.bandwidth = float(bandwidth)
        self.target_l0 = float(target_l0) if target_l0 is not None else None
        self.target_weight = float(target_weight)
        self.target_smoothing = float(target_smoothing)
        self.threshold_lr_scale = float(threshold_lr_scale)
        self.per_token_weight = float(per_token_weight)
        self.threshold = nn.Parameter(torch.full((d_sae,), self.threshold_init))
        if self.target_l0 is not None and self.target_l0 <= 0:
            raise ValueError(f"target_l0={target_l0} must be > 0")

    @classmethod
    def sparsity_for(cls, sparsity_cfg: DictConfig, total_steps: int, warmup_steps: int) -> Sparsity:
        """With `sparsity.target_l0` the penalty itself aims at the target (fixed coefficient)."""
        if sparsity_cfg.target_l0 is None:
            return FixedCoefficient(sparsity_cfg.coefficient)
        return TargetPenalty(sparsity_cfg.coefficient, sparsity_cfg.target_l0)

    @classmethod
    def check_config(cls, cfg: DictConfig, d_sae: int) -> None:
        check_target_l0(cfg, d_sae)

    @torch.no_grad()
    def initialize_from_sample(self, sample_ND: Tensor) -> None:
        """With a target, start every threshold where the sample has L0 = T: the target penalty
        then only has to track the target, not climb to it (~lr per step)."""
        if self.target_l0 is None:
            return
        pre_acts = self.pre_activations(sample_ND).flatten()
        n_above = min(max(1, round(self.target_l0 * len(sample_ND))), len(pre_acts))
        self.threshold.fill_(max(float(pre_acts.topk(n_above).values[-1]), 0.0))

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        return JumpReLUWithCounts.apply(pre_acts_BF, self.threshold, self.bandwidth)[0]

    def code_and_reconstruct(self, x_BD: Tensor) -> SAEOutput:
        pre_acts_BF = self.pre_activations(x_BD)
        latents_BF, counts_F = JumpReLUWithCounts.apply(pre_acts_BF, self.threshold, self.bandwidth)
        return SAEOutput(latents_BF, self.decode(latents_BF), pre_acts_BF, counts_F)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        """L0 (differentiable in theta through the counts), or the target penalty on it."""
        n_tokens = out.latents_BF.numel() // self.d_sae
        l0 = out.firing_counts_F.sum() / n_tokens
        return l0 if self.target_l0 is None else self.target_penalty(l0)

    def target_penalty(self, l0: Tensor) -> Tensor:
        """target_weight * T * (sqrt(d^2 + s^2) - s), d = L0/T - 1: a smoothed |L0 - T|."""
        assert self.target_l0 is not None
        relative_error = l0 / self.target_l0 - 1
        s = self.target_smoothing
        return self.target_weight * self.target_l0 * ((relative_error.pow(2) + s * s).sqrt() - s)

    def auxiliary_loss(self, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor) -> Tensor:
        """For the dead latents: AuxK (docs/method.md#auxk) and a pull that lowers their thresholds.
        A latent whose pre-activations never reach its threshold gets no gradient at all (the mask
        is 0, and the threshold's kernel sees no entry near it), so without these it stays dead for
        the rest of the run (docs/method.md#jumprelu).
        With a target, also the per-token TopK term (`per_token_weight`, k = round(target_l0)): a
        latent learns only from activations above its threshold, so weak features are found late or
        never; the term trains each token's k largest pre-activations, as TopK does (on synthetic
        data with known features 76% -> 91% found at weight 3; docs/results.md#synthetic-recovery)."""
        loss = dead_latent_terms(
            self, x_BD, out, dead_latents_F, -self.threshold, self.dead_latent_aux_coefficient, self.dead_threshold_pull
        )
        if self.per_token_weight and self.target_l0 is not None:
            loss = loss + self.per_token_weight * per_token_topk_error(self, x_BD, out, target_k(self.target_l0))
        return loss

    def learning_rate_scales(self) -> dict[str, float]:
        # Adam moves a raw threshold by at most ~lr per step whatever its gradient, so a short run
        # cannot raise thresholds far enough to reach a low L0 (~100 steps at 1e-3 move them ~0.05,
        # less once Adam's second moment remembers the large gradients of the dense start). How far
        # they must go is set by the pre-activations, whose scale with E||x||^2 = 1 is
        # ~sqrt(E||x - mean||^2 / d_in): a threshold step in those units is lr * sqrt(d_in) (docs/method.md#jumprelu).
        return {"threshold": self.threshold_lr_scale * (self.threshold_lr_reference_width / self.d_in) ** 0.5}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        super().normalize_decoder()
        self.threshold.clamp_(min=0.0)

    def init_kwargs(self) -> dict[str, Any]:
        return super().init_kwargs() | {
            "threshold_init": self.threshold_init,
            "bandwidth": self.bandwidth,
            "target_l0": self.target_l0,
            "target_weight": self.target_weight,
            "target_smoothing": self.target_smoothing,
            "threshold_lr_scale": self.threshold_lr_scale,
            "per_token_weight": self.per_token_weight,
        }

    def extra_repr(self) -> str:
        target = f", target_l0={self.target_l0:g}" if self.target_l0 is not None else ""
        return f"{super().extra_repr()}, bandwidth={self.bandwidth:g}{target}"
