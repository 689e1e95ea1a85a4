"""Console progress in the units a researcher thinks in: tokens trained (with tokens/s and ETA)
instead of Lightning's epochs (the activation cache's bar is sae_sweeps/console.py)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

from sae_sweeps.console import refresh_seconds

class TokenProgressBar(ProgressBar):
    """One bar per run: tokens trained of the budget, tokens/s, ETA and the training loss.

    Reads the module's token counter (a device tensor) only when the bar redraws, so a GPU step
    does not wait on the host.
    """

    def __init__(self, total_tokens: int, description: str) -> None:
        super().__init__()
        self.total_tokens, self.description = int(total_tokens), description
        self.enabled = True
        self._bar: tqdm | None = None
        self._next_refresh = 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        self._bar = tqdm(
            total=self.total_tokens,
            initial=self._tokens(pl_module),  # a resumed run starts where it stopped
            desc=self.description,
            unit="tok",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=0,  # we decide when to redraw
        )
        self._next_refresh = time.monotonic() + refresh_seconds()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if self._bar is None or (now < self._next_refresh and trainer.global_step < trainer.max_steps):
            return
        self._next_refresh = now + refresh_seconds()
        self._show(trainer, self._tokens(pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:  # whole batches may stop short of the budget: finished is 100%
            tokens = self._tokens(pl_module)
            self._bar.total = tokens
            self._show(trainer, tokens)
        self._close()

    def _show(self, trainer: L.Trainer, tokens: int) -> None:
        assert self._bar is not None
        loss = trainer.progress_bar_metrics.get("loss")
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self._bar.total = max(self._bar.total, tokens)  # token batches (e2e) count whole contexts: a little over
        self._bar.update(tokens - self._bar.n)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @staticmethod
    def _tokens(pl_module: L.LightningModule) -> int:
        return int(getattr(pl_module, "tokens_trained", 0))
