"""Callbacks that watch training without changing it."""

from __future__ import annotations

from typing import Any

import lightning as L

from sae_sweeps.evaluation.evaluator import Evaluator
from sae_sweeps.run_logging import log_evaluation
from sae_sweeps.training.module import SAETrainingModule


class PeriodicEvaluation(L.Callback):
    """Held-out metrics every `every_n_steps` optimiser steps, logged once each under the
    summary's names; the run's final evaluation (after training) is the last point, so a
    periodic one closer to the end than `every_n_steps` is skipped."""

    def __init__(self, evaluator: Evaluator, every_n_steps: int) -> None:
        self.evaluator, self.every_n_steps = evaluator, every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert isinstance(pl_module, SAETrainingModule)
        step = trainer.global_step
        if self.every_n_steps <= 0 or step % self.every_n_steps != 0 or step + self.every_n_steps > trainer.max_steps:
            return
        if trainer.is_global_zero:
            with pl_module.clock_paused():
                result = self.evaluator.evaluate(pl_module.sae, pl_module.input_scale, pl_module.output_scale)
            scalars = result.scalars() | {"dead_fraction": pl_module.dead_fraction()}
            tokens = int(pl_module.tokens_trained)
            log_evaluation(trainer.loggers, scalars, result.feature_density_histogram, tokens, step)
