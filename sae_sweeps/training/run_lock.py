"""One trainer per run directory: two identical commands (or a sweep started twice in the same
second) must not train the same member at once, each overwriting the other's checkpoints."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def process_rank() -> int:
    """This process's rank in a data-parallel job (torchrun: RANK, SLURM: SLURM_PROCID, Lightning's
    local DDP children: LOCAL_RANK); 0 for a single process."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def lock_path(run_dir: Path, rank: int) -> Path:
    """Each rank of a DDP run locks its own file, so that every rank of a second command steps back."""
    return run_dir / (".train.lock" if rank == 0 else f".train.rank{rank}.lock")


class RunInProgress(Exception):
    """Another live process holds the run directory's lock."""


@contextmanager
def run_dir_lock(run_dir: Path, rank: int = 0) -> Iterator[None]:
    """Hold the run directory's lock (its holder's pid and host written in the lock file) for the block.

    The lock is the kernel's (flock), so it goes with its holder, however that dies: a SIGKILLed run
    never leaves a stale lock. Raises RunInProgress without writing anything if another holds it.
    """
    path = lock_path(run_dir, rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(f"{run_dir} is being trained by {_holder(path)}") from None
        except OSError as err:  # a filesystem without locks (some Lustre mounts): train unguarded
            log.warning("cannot lock %s (%s): not guarding against a second trainer", path, err)
        else:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, it is reused


def _holder(path: Path) -> str:
    return path.read_text().strip() or "another process (it has not written its pid yet)"


def one_trainer_per_run_dir(train: Callable[[DictConfig, Path], dict[str, Any]]) -> Callable[[DictConfig, Path], dict[str, Any]]:
    """`train(cfg, run_dir)` under the run directory's lock. A second process for the same run says
    who trains it, in one line, and returns an empty summary (what a non-reporting rank returns)."""

    @functools.wraps(train)
    def locked_train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
        try:
            with run_dir_lock(run_dir, process_rank()):
                return train(cfg, run_dir)
        except RunInProgress as busy:
            log.warning("%s: not training it again", busy)
            return {}

    return locked_train
