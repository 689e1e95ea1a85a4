"""A loss for SLURM tests whose runs must still be training when the test acts, on any machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sae_sweeps.losses.local import LocalLoss

STEP_SECONDS = 0.2
STARTED_FILE_ENV = "SLOW_LOSS_STARTED_FILE"


class SlowLocalLoss(LocalLoss):
    """The local loss, after sleeping STEP_SECONDS: a run's length is set by its step count rather
    than by the machine's speed, and the sleep leaves the cores to others. Same numbers as LocalLoss.
    Its first call touches $SLOW_LOSS_STARTED_FILE, if set: training has begun."""

    def __call__(self, *args, **kwargs):
        started = os.environ.get(STARTED_FILE_ENV)
        if started and not Path(started).exists():
            Path(started).touch()
        time.sleep(STEP_SECONDS)
        return super().__call__(*args, **kwargs)
