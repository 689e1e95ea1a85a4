"""Callbacks that watch training without changing it."""

from __future__ import annotations

from typing import Any

import lightning as L

from sae_sweeps.evaluation.evaluator import Evaluator
from sae_sweeps.training.module import SAETrainingModule


class PeriodicEvaluation(L.Callback):
    """Held-out metrics every `every_n_steps` optimiser steps, logged under the summary's names."""

    def __init__(self, evaluator: Evaluator, every_n_steps: int) -> None:
        self.evaluator, self.every_n_steps = evaluator, every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert isinstance(pl_module, SAETrainingModule)
        step = trainer.global_step
        if self.every_n_steps <= 0 or step % self.every_n_steps != 0 or step >= trainer.max_steps:
            return
        if trainer.is_global_zero:
            result = self.evaluator.evaluate(pl_module.sae, pl_module.input_scale)
            scalars = result.scalars() | {"dead_fraction": pl_module.dead_fraction()}
            for logger in trainer.loggers:
                logger.log_metrics({f"eval/{k}": v for k, v in scalars.items()}, step=step)
