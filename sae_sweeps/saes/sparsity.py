"""What sets an SAE's L0: one object per SAE (`SparseAutoencoder.sparsity`), chosen by its
architecture from the `sparsity` config (`SparseAutoencoder.sparsity_for`).

The trainer asks it for the coefficient of this step (it multiplies `sae.sparsity_loss`; 0 for a
hard budget), tells it each batch's L0, and checkpoints its state; the run name and the summary
read its setting. None of them knows which kind it is (docs/method.md#sparsity-settings).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor


class Sparsity(ABC):
    """The setting that sets one SAE's L0, and how it moves during training (if it does)."""

    target_l0: float | None = None
    """The L0 the run aims at (`sparsity.target_l0`); None when a raw setting was given."""

    @abstractmethod
    def coefficient(self) -> float | Tensor:
        """The weight on `sae.sparsity_loss` at this step, before the warm-up (a 0-dim tensor on
        the training device while a controller moves it: no host sync per step)."""

    @abstractmethod
    def setting(self) -> tuple[str, float]:
        """(knob, value) that names the run and fills `sparsity_knob` / `sparsity_value`."""

    def sae_arguments(self) -> dict[str, Any]:
        """Constructor arguments the SAE's forward needs from this setting (TopK's `k`)."""
        return {}

    def observe(self, l0: Tensor, step: int) -> None:
        """Take the L0 (mean over all ranks) of the batch trained at optimiser step `step`."""

    def start_at_fidelity_scale(self, fidelity_scale: float) -> None:
        """Before training: `fidelity_scale` is the run's fidelity term over the local reconstruction error
        at initialisation (1 for the local loss). A setting that aims at a target and searches for its
        coefficient starts that search scaled by it; a coefficient the user gave stays as given."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for training to resume exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""


class HardBudget(Sparsity):
    """k active latents (per token, or per token on average over a batch): no penalty at all."""

    def __init__(self, k: int, target_l0: float | None = None) -> None:
        self.k = int(k)
        self.target_l0 = target_l0

    def coefficient(self) -> float:
        return 0.0

    def setting(self) -> tuple[str, float]:
        return "k", float(self.k)

    def sae_arguments(self) -> dict[str, Any]:
        return {"k": self.k}


class FixedCoefficient(Sparsity):
    """A penalty weight that stays `sparsity.coefficient` for the whole run."""

    def __init__(self, coefficient: float) -> None:
        self.value = float(coefficient)

    def coefficient(self) -> float:
        return self.value

    def setting(self) -> tuple[str, float]:
        return "coefficient", self.value


class TargetPenalty(FixedCoefficient):
    """A fixed coefficient on a penalty that itself aims at `target_l0` (JumpReLU's target mode)."""

    def __init__(self, coefficient: float, target_l0: float) -> None:
        super().__init__(coefficient)
        self.target_l0 = float(target_l0)

    def setting(self) -> tuple[str, float]:
        return "target_l0", self.target_l0

    def sae_arguments(self) -> dict[str, Any]:
        return {"target_l0": self.target_l0}


class CoefficientController(Sparsity):
    """A penalty coefficient steered toward `target_l0`, then held fixed.

    PI control on log c. After every step in [adapt_from_step, freeze_at_step), with
    e = clip(log(L0_ema / T) + horizon_steps * slope, -1, 1):
        I <- I + gain * e        log c = I + proportional_gain * e        (I starts at log c_0)
    where L0_ema is a bias-corrected exponential moving average (decay `l0_decay`) of the batches'
    L0, updated on every step, and slope the same average of its step-to-step change in log. The
    integral holds instead of rising while L0, above T, is already falling fast enough to reach T
    within `anti_windup_steps` (conditional integration; a value <= horizon_steps never holds). Too many latents raise the coefficient, too few lower it; on the
    log scale, so one gain suits coefficients of any size, and clipped, so L0 far above T cannot
    make one step huge. L0 follows c only tens of steps later: the integral alone either winds
    up and overshoots or lands too slowly, the proportional part answers at once and fades as
    the error does. From `freeze_at_step` on c no longer moves, so the saved SAE was trained under
    one objective for the end of the run. Before `adapt_from_step` (the coefficient's warm-up and
    the first stretch of training, while every SAE is still dense) L0 above target says nothing
    about c.
    """

    def __init__(
        self,
        initial_coefficient: float,
        target_l0: float,
        adapt_from_step: int,
        freeze_at_step: int,
        gain: float,
        proportional_gain: float,
        l0_decay: float,
        horizon_steps: float,
        anti_windup_steps: float,
    ) -> None:
        self.target_l0 = float(target_l0)
        self.adapt_from_step, self.freeze_at_step = int(adapt_from_step), int(freeze_at_step)
        self.gain, self.proportional_gain, self.l0_decay = float(gain), float(proportional_gain), float(l0_decay)
        self.horizon_steps, self.anti_windup_steps = float(horizon_steps), float(anti_windup_steps)
        self.integral = torch.tensor(math.log(initial_coefficient))
        self.log_coefficient = self.integral.clone()
        self.l0_ema = torch.tensor(0.0)
        self.log_l0_slope_ema = torch.tensor(0.0)
        self.l0_updates = 0

    def coefficient(self) -> Tensor:
        return self.log_coefficient.exp()

    def setting(self) -> tuple[str, float]:
        return "target_l0", self.target_l0

    def start_at_fidelity_scale(self, fidelity_scale: float) -> None:
        # `sparsity.coefficient` is a local-loss weight: an e2e loss's KL is another size (on SmolLM2 ~10x the
        # normalised MSE at initialisation, on a random tiny LM ~0.02x), and a search that starts 10-100x
        # off cannot land within the steps it has.
        self.integral = self.integral + math.log(fidelity_scale)
        self.log_coefficient = self.integral.clone()

    def running_l0(self) -> Tensor:
        """The bias-corrected moving average of the batches' L0."""
        return self.l0_ema / (1 - self.l0_decay**self.l0_updates)

    def running_log_l0_slope(self) -> Tensor:
        """The bias-corrected moving average of the step-to-step change in log(running L0)."""
        slope_updates = self.l0_updates - 1
        return self.log_l0_slope_ema / (1 - self.l0_decay**slope_updates) if slope_updates else self.log_l0_slope_ema

    @torch.no_grad()
    def observe(self, l0: Tensor, step: int) -> None:
        l0 = l0.detach().float()
        previous = self.running_l0() if self.l0_updates else None
        self.l0_ema = self.l0_ema.to(l0.device).lerp(l0, 1 - self.l0_decay)
        self.l0_updates += 1
        log_l0 = self.running_l0().clamp_min(1e-6).log()
        if previous is not None:
            slope = log_l0 - previous.clamp_min(1e-6).log()
            self.log_l0_slope_ema = self.log_l0_slope_ema.to(l0.device).lerp(slope, 1 - self.l0_decay)
        if self.adapt_from_step <= step < self.freeze_at_step:
            log_error, slope = log_l0 - math.log(self.target_l0), self.running_log_l0_slope()
            error = (log_error + self.horizon_steps * slope).clamp(-1.0, 1.0)
            # Under e2e, L0 answers a coefficient rise tens of steps late: an integral that keeps raising c
            # while L0 is already falling to T winds c up to several times what T needs, L0 then overshoots,
            # and the latents it kills stay dead (docs/method.md#target-l0-controller). Only rises are held:
            # latents come back slowly, so L0 below T rising toward it is no reason to keep c high.
            hold = (error > 0) & (log_error + self.anti_windup_steps * slope < 0)
            self.integral = self.integral.to(l0.device) + torch.where(hold, 0.0, self.gain * error)
            self.log_coefficient = self.integral + self.proportional_gain * error

    def state_dict(self) -> dict[str, Any]:
        return {
            "integral": self.integral.cpu(), "log_coefficient": self.log_coefficient.cpu(), "l0_ema": self.l0_ema.cpu(),
            "log_l0_slope_ema": self.log_l0_slope_ema.cpu(), "l0_updates": self.l0_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.integral = state["integral"].clone()
        self.log_coefficient = state["log_coefficient"].clone()
        self.l0_ema = state["l0_ema"].clone()
        self.log_l0_slope_ema = state["log_l0_slope_ema"].clone()
        self.l0_updates = int(state["l0_updates"])
