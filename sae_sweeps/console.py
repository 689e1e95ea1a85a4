"""The console a researcher reads: our messages and progress bars (the token bar of a run is
sae_sweeps/training/progress.py); Lightning's notices, third-party warnings and weight-loading
bars go only to the run's launch.log."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


OUR_PACKAGES = ("sae_sweeps", "analysis")


class ConsoleFilter(logging.Filter):
    """What the console shows: our own messages, Hydra's, and warnings raised by our code;
    Lightning's notices and third-party warnings go only to the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return any(f"/{package}/" in record.getMessage().split(":", 1)[0] for package in OUR_PACKAGES)
        if record.name.startswith("lightning"):
            return record.levelno >= logging.ERROR
        return True


class ConsoleFormatter(logging.Formatter):
    """Just the message on the console ("warning: ..." above INFO); the log file keeps Hydra's format."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":  # "path:line: Category: text\n  source line" -> "text"
            message = message.split(": ", 2)[-1].splitlines()[0]
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def quiet_console() -> None:
    """Route Lightning's and Python's warnings into logging (so into launch.log), and keep them
    and the Hugging Face weight-loading bars off the console. Call it once Hydra has set up
    logging for the job."""
    import transformers

    logging.captureWarnings(True)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # each has a console handler of its own
        lightning_logger = logging.getLogger(name)
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
        lightning_logger.propagate = True
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the FileHandler of launch.log
            handler.addFilter(ConsoleFilter())
            handler.setFormatter(ConsoleFormatter())
    transformers.utils.logging.disable_progress_bar()


TTY_REFRESH_SECONDS = 0.5
# A log file (SLURM's .out, a captured test) gets few updates: each one is a line's worth of bytes.
FILE_REFRESH_SECONDS = 30.0


def refresh_seconds() -> float:
    return TTY_REFRESH_SECONDS if sys.stderr.isatty() else FILE_REFRESH_SECONDS


def cache_build_bar(contexts: Iterable[T], total: int) -> Iterator[T]:
    """The activation-cache builder's LM pass over `total` contexts, as a progress bar."""
    yield from tqdm(
        contexts, total=total, desc="activation cache", unit="ctx", dynamic_ncols=True, mininterval=refresh_seconds()
    )
