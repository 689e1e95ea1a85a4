"""The files of a cache directory: their names, the storage dtypes, the lock, atomic writes and the
checksum test every shard passes before it is read."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("sae_sweeps.activation_cache")

MANIFEST = "manifest.json"
LOCK = ".lock"
BUILD_LOG = "builds.log"
STORAGE = {"float32": (torch.float32, np.float32), "bfloat16": (torch.bfloat16, np.uint16)}
"""storage dtype name -> (torch dtype of the activations stored, numpy dtype of the .npy file)."""


class CacheError(RuntimeError):
    """The cache cannot be built or read (no disk space, unusable directory...)."""


def announce(message: str) -> None:
    log.info(message)
    if not logging.getLogger().hasHandlers():  # outside Hydra nobody prints the log: print it
        print(message, file=sys.stderr, flush=True)


@contextmanager
def file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """flock on `path`; says so when it has to wait for another process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            announce(f"activation cache: waiting for another process that is building {path.parent}")
            fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256, this process


def shard_is_valid(path: Path, entry: dict[str, Any]) -> bool:
    """The shard exists with the manifest's size and sha256 (hashed once per process per file version)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != entry["bytes"]:
        return False
    memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if memo not in _VERIFIED:
        _VERIFIED[memo] = file_sha256(path)
    return _VERIFIED[memo] == entry["sha256"]


class _HashingWriter:
    """A binary file's writer that hashes and counts the bytes passing through it."""

    def __init__(self, f: Any) -> None:
        self.f, self.digest, self.bytes = f, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.bytes += view.nbytes
        return self.f.write(view)


def write_hashed_atomically(path: Path, write: Callable[[Any], None]) -> tuple[int, str]:
    """`write_atomically` in binary mode, returning the file's size and sha256 from the bytes as they
    were written: a shard of hundreds of MB is not read back to checksum it, nor held twice in memory."""
    writers: list[_HashingWriter] = []

    def hashed(f: Any) -> None:
        writers.append(_HashingWriter(f))
        write(writers[0])

    write_atomically(path, hashed)
    return writers[0].bytes, writers[0].digest.hexdigest()


def write_atomically(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(file)` to a temporary name, fsync, rename over `path`, fsync the folder:
    a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
