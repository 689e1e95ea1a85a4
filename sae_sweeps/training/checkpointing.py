"""Surviving a cluster: atomic checkpoints in the run directory, written every so often and when
SLURM warns of a time limit or preemption, and picked up again when the job restarts."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch

from sae_sweeps.launching.signals import warning_signal

from sae_sweeps.run_directory import checkpoint_path

log = logging.getLogger(__name__)



class Preempted(SystemExit):
    """The job was told to stop (preemption, time limit, requeue); its checkpoint is saved.

    A SystemExit, not an Exception, so that a sweep does not record the member as failed.
    """


def stop_signals() -> tuple[signal.Signals, ...]:
    """The time-limit warning the launcher asks SLURM for, and SIGTERM (preemption, scancel)."""
    return (warning_signal(), signal.SIGTERM)


def temporary_path(path: Path) -> Path:
    """A name beside `path` that no other writer uses, even another host writing the same run."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def resumable_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The run's last checkpoint and its optimiser step, if one exists and loads."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a checkpoint that cannot be read is not trusted, whatever its size
        log.warning("ignoring unreadable checkpoint %s: %s", path, err)
        return None
    return path, int(state["global_step"])


class ResumableCheckpoints(L.Callback):
    """Saves `checkpoints/last.ckpt` every `every_n_steps` steps and, when SLURM signals, after the
    step in flight.

    Each save goes to a temporary file renamed over the old one, so a writer killed halfway
    leaves the previous complete checkpoint in place. A checkpoint is never taken of
    non-finite weights, so the last one is always a good one.
    """

    def __init__(self, run_dir: Path, every_n_steps: int) -> None:
        self.path = checkpoint_path(run_dir)
        self.every_n_steps = every_n_steps
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- signals --------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum in stop_signals():
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._remember_signal)

    def _remember_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only note it: saving from inside a signal handler could catch a step half-done.
        self.stop_signal = signum

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # -- saving ---------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        stop = self._stop_requested(trainer, pl_module)
        step = trainer.global_step
        if stop or (self.every_n_steps > 0 and step % self.every_n_steps == 0 and step < trainer.max_steps):
            self.save(trainer, pl_module)
        if stop:
            self._hand_over(self.stop_signal or warning_signal(), step)

    def _stop_requested(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        stop = torch.tensor(float(self.stop_signal is not None), device=pl_module.device)
        # Every rank must reach the collective save together, whichever rank saw the signal.
        return bool(trainer.strategy.reduce(stop, reduce_op="sum") > 0)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.warning("not checkpointing step %d: the weights are not finite", trainer.global_step)
            return
        tmp = temporary_path(self.path)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: optimiser, loops, callbacks
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def _hand_over(self, signum: int, step: int) -> None:
        """Let whoever set up the job (submitit, SLURM) requeue it, then stop this process."""
        previous = self._previous_handlers.get(signum)
        self._restore_handlers()
        log.warning("checkpointed step %d at signal %s: stopping", step, signal.Signals(signum).name)
        if callable(previous):
            previous(signum, None)  # submitit requeues the job and exits here
        elif signum == warning_signal() and os.environ.get("SLURM_JOB_ID"):
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        raise Preempted(f"stopped by signal {signal.Signals(signum).name}; resume from {self.path}")
