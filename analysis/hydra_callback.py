"""A Hydra callback that, when a sweep ends, prints a table of its members, leaves the frontier
figures and tables in the sweep's directory, and (when the sweep logs to wandb) logs them as
one sweep-level wandb run in the sweep's group (analysis/sweep_end.py)."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

OUT_SUBDIR = "analysis"


class AnalyzeSweepCallback(Callback):
    """Runs `analyze` on hydra.sweep.dir after a multirun, writing into <sweep dir>/analysis; never raises."""

    def __init__(
        self,
        x: str = "l0",
        y: str = "ce_loss_increase",
        group: str | Sequence[str] = "sae_arch,loss",
        at: Sequence[float] | None = None,
        baseline: str | None = None,
        html: bool = False,
        enabled: bool = True,
    ) -> None:
        self.x, self.y, self.group, self.at, self.baseline, self.html = x, y, group, at, baseline, html
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        # pandas and matplotlib load only here: Hydra builds this callback for every run, and a
        # config error or --cfg must not wait for them.
        from analysis.report import analyze
        from analysis.runs import status_summary
        from analysis.sweep_end import log_sweep_to_wandb, members_table

        try:
            out = Path(config.hydra.sweep.dir) / OUT_SUBDIR
            result = analyze(
                out.parent,
                x=self.x,
                y=self.y,
                group=self.group,
                at=self.at,
                baseline=self.baseline,
                out=out,
                html=self.html,
            )
        # Any failure, bad input or bug, must not turn a finished sweep into a failed command.
        except Exception as error:
            print(f"warning: sweep analysis failed: {type(error).__name__}: {_first_line(error)}")
            return
        print(members_table(result.runs))
        for note in result.notes:
            print(f"note: {note}")
        print(f"sweep analysis ({status_summary(result.runs)}) written to {out}")
        try:
            logged = log_sweep_to_wandb(config, result, out)
        except Exception as error:
            print(f"warning: sweep analysis not logged to wandb: {type(error).__name__}: {_first_line(error)}")
            return
        if logged:
            print(f"sweep analysis logged to wandb ({logged})")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]
