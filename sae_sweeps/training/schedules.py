"""Learning-rate and sparsity-coefficient schedules, as functions of the optimiser step."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up, constant, then cosine decay of the learning rate over the final steps; linear
    warm-up of the sparsity coefficient."""

    total_steps: int
    """Optimiser steps in the run."""
    lr_warmup_steps: int
    """Steps over which the learning rate rises linearly from ~0."""
    lr_final_fraction: float
    """The learning rate at the last step, as a fraction of the peak."""
    sparsity_warmup_steps: int
    """Steps over which the sparsity coefficient rises linearly from 0 (dead latents otherwise)."""
    lr_decay_steps: int | None = None
    """The final steps over which the learning rate decays (None: every step after the warm-up, the e2e paper's)."""

    def lr_factor(self, step: int) -> float:
        if step < self.lr_warmup_steps:
            return (step + 1) / self.lr_warmup_steps
        after_warmup = max(self.total_steps - self.lr_warmup_steps, 1)
        decay_steps = after_warmup if self.lr_decay_steps is None else max(min(self.lr_decay_steps, after_warmup), 1)
        progress = min(max(step - (self.total_steps - decay_steps), 0) / decay_steps, 1.0)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr_final_fraction + (1 - self.lr_final_fraction) * cosine

    def sparsity_factor(self, step: int) -> float:
        if self.sparsity_warmup_steps <= 0:
            return 1.0
        return min(1.0, step / self.sparsity_warmup_steps)
