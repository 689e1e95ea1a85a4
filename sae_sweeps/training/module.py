"""The Lightning module that trains one SAE with any loss: the trainer knows only the interfaces
`SparseAutoencoder` and `SAELoss`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor

from sae_sweeps.evaluation import metrics
from sae_sweeps.losses import SAELoss
from sae_sweeps.losses.base import PHASES, Phase
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.training.schedules import Schedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class SAETrainingModule(L.LightningModule):
    """Adam on the SAE's parameters, unit-norm decoder rows, and dead-latent bookkeeping."""

    def __init__(
        self,
        sae: SparseAutoencoder,
        loss: SAELoss,
        schedule: Schedule,
        lr: float,
        adam_betas: tuple[float, float],
        input_scale: float,
        dead_window_tokens: int,
        output_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.sae, self.loss_fn, self.schedule = sae, loss, schedule
        self.lr, self.adam_betas = lr, tuple(adam_betas)
        self.input_scale = float(input_scale)
        self.output_scale = self.input_scale if output_scale is None else float(output_scale)
        """What a transcoder's target output is multiplied by (an SAE's target is its input: input_scale)."""
        self.dead_window_tokens = dead_window_tokens
        self.register_buffer("tokens_since_fired_F", torch.zeros(sae.d_sae, dtype=torch.long))
        self.register_buffer("tokens_trained", torch.zeros((), dtype=torch.long))
        self.loss_history: list[Tensor] = []  # detached, on device: no host sync per step
        self._seconds_before_resume = 0.0
        self._started_at: float | None = None
        self._paused_seconds = 0.0  # since _started_at: periodic evaluations, which are not training
        self._paused_this_step = 0.0
        self.phase_tokens_P = torch.zeros(len(PHASES), dtype=torch.long)
        """Tokens trained in each kind of step (`PHASES` order; over every data-parallel rank and every (re)start)."""
        self.phase_seconds: dict[Phase, float] = dict.fromkeys(PHASES, 0.0)
        """Wall time of each kind of step, its batch's loading included (this rank; every (re)start)."""
        self._step_phase: Phase | None = None
        self._last_step_end: float | None = None

    def dead_latents(self) -> Tensor:
        return self.tokens_since_fired_F >= self.dead_window_tokens

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        coefficient = self.sae.sparsity.coefficient() * self.schedule.sparsity_factor(self.global_step)
        self._step_phase = self.loss_fn.phase_of(batch)
        out = self.loss_fn(self.sae, batch, self.input_scale, coefficient, self.dead_latents(), self.output_scale)
        batch_l0 = out.firing_counts_F.detach().sum() / out.n_tokens
        self.sae.sparsity.observe(self.trainer.strategy.reduce(batch_l0, reduce_op="mean"), self.global_step)
        if not torch.isfinite(out.total):
            raise NonFiniteLossError(
                f"loss is {out.total.item()} at step {self.global_step} "
                f"(terms: { {k: round(v.item(), 6) for k, v in out.terms.items()} }); "
                "lower train.lr or check the data"
            )
        self._update_firing_statistics(out.firing_counts_F, out.n_tokens)
        self.loss_history.append(self.trainer.strategy.reduce(out.total.detach(), reduce_op="mean"))
        # Lightning's bookkeeping of each self.log call costs ~0.3 ms even on steps that write
        # nothing (docs/benchmarks.md), so only logging steps log: those Lightning sends to the
        # loggers, (step + 1) % log_every_n_steps == 0 (other steps' values would arrive stale).
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log_dict(
                {
                    "train/loss": out.total.detach(),
                    **{f"train/{name}": value for name, value in out.terms.items()},
                    "train/l0": out.firing_counts_F.sum() / out.n_tokens,
                    "train/dead_fraction": self.dead_latents().float().mean(),
                    "train/sparsity_coefficient": coefficient,
                    "train/lr": self.lr * self.schedule.lr_factor(self.global_step),
                    "tokens_trained": self.tokens_trained.float(),
                },
                on_step=True,
                prog_bar=False,
            )
            self.log("loss", out.total.detach(), prog_bar=True, logger=False)
        return out.total

    @torch.no_grad()
    def _update_firing_statistics(self, firing_counts_F: Tensor, n_tokens: int) -> None:
        """Count tokens since each latent last fired, summed over all data-parallel ranks."""
        # reduce() all-reduces in place under DDP: give it copies
        fired_count_F = self.trainer.strategy.reduce(firing_counts_F.clone(), reduce_op="sum")
        n_tokens_all = self.trainer.strategy.reduce(
            torch.tensor(n_tokens, device=firing_counts_F.device), reduce_op="sum"
        ).long()
        self.tokens_since_fired_F.add_(n_tokens_all).masked_fill_(fired_count_F > 0, 0)
        self.tokens_trained += n_tokens_all
        self.phase_tokens_P = self.phase_tokens_P.to(n_tokens_all.device)  # a no-op after the first step
        self.phase_tokens_P[PHASES.index(self._step_phase)] += n_tokens_all

    def loss_at_start_and_end(self) -> tuple[float, float]:
        """Mean training loss over the first and the last tenth of the steps this process ran."""
        if not self.loss_history:
            return float("nan"), float("nan")
        losses = torch.stack(self.loss_history).float().cpu()
        tenth = max(1, len(losses) // 10)
        return losses[:tenth].mean().item(), losses[-tenth:].mean().item()

    def phase_tokens(self) -> dict[Phase, int]:
        """Tokens trained in each kind of step, by phase."""
        return dict(zip(PHASES, self.phase_tokens_P.tolist()))

    def dead_fraction(self) -> float:
        window = min(self.dead_window_tokens, int(self.tokens_trained))
        return metrics.dead_fraction(self.tokens_since_fired_F, max(window, 1))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.sae.remove_gradient_parallel_to_decoder()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Part of the step itself, so that no callback (a checkpoint) ever sees unnormalised rows.
        self.sae.normalize_decoder()

    def configure_optimizers(self) -> dict[str, Any]:
        # fused: one kernel for all parameters on CUDA instead of several per parameter
        fused = self.device.type == "cuda"
        optimizer = torch.optim.Adam(self.parameter_groups(), lr=self.lr, betas=self.adam_betas, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One Adam group per learning rate the SAE asks for (the schedule scales each alike)."""
        scales = self.sae.learning_rate_scales()
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, parameter in self.sae.named_parameters():
            groups.setdefault(scales.get(name, 1.0), []).append(parameter)
        return [{"params": params, "lr": self.lr * scale} for scale, params in groups.items()]

    def on_train_start(self) -> None:
        self._started_at = self._last_step_end = time.perf_counter()
        self._paused_seconds = self._paused_this_step = 0.0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning calls this after the callbacks' on_train_batch_end: a periodic evaluation there is paused time.
        now = time.perf_counter()
        if self._step_phase is not None and self._last_step_end is not None:
            self.phase_seconds[self._step_phase] += now - self._last_step_end - self._paused_this_step
        self._last_step_end, self._paused_this_step = now, 0.0

    def on_train_end(self) -> None:
        self._seconds_before_resume = self.train_seconds()
        self._started_at = None

    @contextmanager
    def clock_paused(self) -> Iterator[None]:
        """Wall time inside is not training time (a held-out evaluation during training)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            paused = time.perf_counter() - start
            self._paused_seconds += paused
            self._paused_this_step += paused

    def train_seconds(self) -> float:
        """Wall time of the training steps and the loading of their batches, over every (re)start of the job
        (evaluations excluded)."""
        running = time.perf_counter() - self._started_at - self._paused_seconds if self._started_at is not None else 0.0
        return self._seconds_before_resume + running

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["input_scale"] = self.input_scale
        checkpoint["output_scale"] = self.output_scale
        checkpoint["train_seconds"] = self.train_seconds()
        checkpoint["loss_history"] = [loss.cpu() for loss in self.loss_history]
        checkpoint["sparsity"] = self.sae.sparsity.state_dict()
        checkpoint["loss"] = self.loss_fn.state_dict()
        checkpoint["phase_tokens"], checkpoint["phase_seconds"] = self.phase_tokens(), dict(self.phase_seconds)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.input_scale = checkpoint["input_scale"]
        self.output_scale = checkpoint.get("output_scale", self.input_scale)  # absent from checkpoints of SAEs before transcoders
        self._seconds_before_resume = checkpoint["train_seconds"]
        self.loss_history = [loss.to(self.device) for loss in checkpoint["loss_history"]]
        self.sae.sparsity.load_state_dict(checkpoint["sparsity"])
        self.loss_fn.load_state_dict(checkpoint.get("loss", {}))  # absent before losses had state (local_then_e2e)
        tokens = checkpoint.get("phase_tokens", {})
        self.phase_tokens_P = torch.tensor([tokens.get(phase, 0) for phase in PHASES], dtype=torch.long)
        self.phase_seconds |= checkpoint.get("phase_seconds", {})
