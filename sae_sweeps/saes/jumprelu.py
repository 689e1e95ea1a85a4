"""JumpReLU SAE (Rajamanoharan et al. 2024): a learned threshold per latent and an L0 penalty,
trained with straight-through pseudo-derivatives (rectangle kernel, bandwidth eps).

f_i = z_i * H(z_i - theta_i), z = W_enc (x - b_dec) + b_enc. Both the jump and the L0 count are
piecewise constant in theta; their pseudo-derivatives (SAE_BRIEF section 2) are
    d/dtheta JumpReLU(z, theta) = -(theta / eps) K((z - theta) / eps)
    d/dtheta H(z - theta)       = -(1 / eps)     K((z - theta) / eps),    K(u) = 1{|u| < 1/2}
and the gradient with respect to z is the ordinary mask H(z - theta) for JumpReLU (and zero for
the step: the L0 term trains the thresholds only).

The threshold is stored raw, not as log(theta): Adam moves a raw parameter by ~lr per step
whatever its size, whereas log-parameterised thresholds move by ~theta * lr and barely respond to
the sparsity coefficient (the brief's pitfall).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sae_sweeps.saes.base import SAEOutput, SparseAutoencoder


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1{|u| < 1/2}."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """z * H(z - theta); d/dz = H(z - theta), d/dtheta = -(theta/eps) K((z - theta)/eps)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_z = grad_theta = None
        if ctx.needs_input_grad[0]:
            grad_z = (z > theta).to(z.dtype) * grad_out
        if ctx.needs_input_grad[1]:
            pseudo = -(theta / eps) * rectangle((z - theta) / eps)
            grad_theta = (pseudo * grad_out).sum_to_size(theta.shape)
        return grad_z, grad_theta, None


class StepFunction(torch.autograd.Function):
    """H(z - theta); d/dz = 0, d/dtheta = -(1/eps) K((z - theta)/eps)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_z = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            pseudo = -(1.0 / eps) * rectangle((z - theta) / eps)
            grad_theta = (pseudo * grad_out).sum_to_size(theta.shape)
        return grad_z, grad_theta, None


def jumprelu(z: Tensor, theta: Tensor, eps: float) -> Tensor:
    return JumpReLUFunction.apply(z, theta, eps)


def step(z: Tensor, theta: Tensor, eps: float) -> Tensor:
    return StepFunction.apply(z, theta, eps)


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

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        threshold_init: float = 0.001,
        bandwidth: float = 0.001,
        target_l0: float | None = None,
        target_weight: float = 10.0,
        target_smoothing: float = 0.05,
    ) -> None:
        super().__init__(d_in, d_sae)
        self.threshold_init = float(threshold_init)
        self.bandwidth = float(bandwidth)
        self.target_l0 = float(target_l0) if target_l0 is not None else None
        self.target_weight = float(target_weight)
        self.target_smoothing = float(target_smoothing)
        self.threshold = nn.Parameter(torch.full((d_sae,), self.threshold_init))
        if self.target_l0 is not None:
            if self.target_l0 <= 0:
                raise ValueError(f"target_l0={target_l0} must be > 0")
            self.sparsity_knob = "target_l0"  # this run is set by its target, not by the coefficient

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        return jumprelu(pre_acts_BF, self.threshold, self.bandwidth)

    def l0(self, pre_acts_BF: Tensor) -> Tensor:
        """Mean over tokens of the number of latents above threshold, differentiable in theta."""
        return step(pre_acts_BF, self.threshold, self.bandwidth).sum(dim=-1).mean()

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        l0 = self.l0(out.pre_acts_BF)
        return l0 if self.target_l0 is None else self.target_penalty(l0)

    def target_penalty(self, l0: Tensor) -> Tensor:
        """target_weight * T * (sqrt(d^2 + s^2) - s), d = L0/T - 1: a smoothed |L0 - T|."""
        assert self.target_l0 is not None
        relative_error = l0 / self.target_l0 - 1
        s = self.target_smoothing
        return self.target_weight * self.target_l0 * ((relative_error.pow(2) + s * s).sqrt() - s)

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
        }

    def extra_repr(self) -> str:
        target = f", target_l0={self.target_l0:g}" if self.target_l0 is not None else ""
        return f"{super().extra_repr()}, bandwidth={self.bandwidth:g}{target}"
