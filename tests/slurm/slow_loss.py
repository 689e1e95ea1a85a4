"""A loss for SLURM tests whose runs must span a time limit on any machine, fast or loaded."""

from __future__ import annotations

import time

from sae_sweeps.losses.local import LocalLoss

STEP_SECONDS = 0.2


class SlowLocalLoss(LocalLoss):
    """The local loss, after sleeping STEP_SECONDS: a run's length is set by its step count rather
    than by the machine's speed, and the sleep leaves the cores to others. Same numbers as LocalLoss."""

    def __call__(self, *args, **kwargs):
        time.sleep(STEP_SECONDS)
        return super().__call__(*args, **kwargs)
