"""`CacheReader`: the rows of any contexts, read from a checked cache."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_sweeps.data.activation_cache.files import STORAGE, CacheError


class CacheReader:
    """Reads the rows of any contexts from a checked cache with positioned reads (no mmap, so the
    page cache does not count against the process's resident memory)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory, self.manifest = directory, manifest
        self.d_in: int = manifest["d_in"]
        self.n_contexts: int = manifest["n_contexts"]
        self.complete: bool = manifest["complete_epoch"]
        self.shard_contexts: int = manifest["shard_contexts"]
        self.torch_storage, self.np_storage = STORAGE[manifest["storage_dtype"]]
        self.activation_dtype = getattr(torch, manifest["activation_dtype"])
        self.row_bytes = self.d_in * np.dtype(self.np_storage).itemsize
        rows = np.array([r for s in manifest["shards"] for r in s["context_rows"]], dtype=np.int64)
        self.context_rows = rows
        self.row_start = np.concatenate([[0], np.cumsum(rows)])
        self._fds: list[int] = []
        self._offsets: list[int] = []
        self._shard_first_row: list[int] = []
        for shard in manifest["shards"]:
            path = directory / shard["file"]
            fd = os.open(path, os.O_RDONLY)
            header = np.load(path, mmap_mode="r")  # maps, touches no data: just the header's shape and offset
            shape, offset = header.shape, header.offset
            del header
            if shape != (shard["rows"], self.d_in):
                raise CacheError(f"{path}: shape {shape}, manifest says {(shard['rows'], self.d_in)}")
            self._fds.append(fd)
            self._offsets.append(offset)
            self._shard_first_row.append(int(self.row_start[shard["first_context"]]))

    @property
    def n_tokens(self) -> int:
        return int(self.row_start[-1])

    def rows(self, contexts: Sequence[int]) -> int:
        return int(self.context_rows[np.asarray(contexts, dtype=np.int64)].sum())

    def read(self, contexts: Sequence[int]) -> Tensor:
        """[rows, d_in] activations of `contexts` (indices < n_contexts), in that order."""
        contexts = np.asarray(contexts, dtype=np.int64)
        out = np.empty((int(self.context_rows[contexts].sum()), self.d_in), dtype=self.np_storage)
        position = 0
        run_start = 0
        for i in range(1, len(contexts) + 1):  # merge runs of consecutive contexts in one shard
            if (
                i < len(contexts)
                and contexts[i] == contexts[i - 1] + 1
                and contexts[i] // self.shard_contexts == contexts[run_start] // self.shard_contexts
            ):
                continue
            first, last = int(contexts[run_start]), int(contexts[i - 1])
            shard = first // self.shard_contexts
            row0, row1 = int(self.row_start[first]), int(self.row_start[last + 1])
            self._pread(shard, row0 - self._shard_first_row[shard], out[position : position + row1 - row0])
            position += row1 - row0
            run_start = i
        tensor = torch.from_numpy(out)
        if self.torch_storage == torch.bfloat16:
            tensor = tensor.view(torch.bfloat16)
        return tensor.to(self.activation_dtype)

    def _pread(self, shard: int, row: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        offset = self._offsets[shard] + row * self.row_bytes
        done = 0
        while done < len(view):
            n = os.preadv(self._fds[shard], [view[done:]], offset + done)
            if n <= 0:
                raise CacheError(f"{self.directory}: shard {shard} is shorter than its manifest says")
            done += n

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
