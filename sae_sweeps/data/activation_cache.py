"""An on-disk cache of LM activations at a hook point, shared by every SAE that trains on the same
(model, hook point, data): one LM pass per sweep instead of one per member. docs/activation_cache.md
has the design; in short:

- The cache holds exactly what `ActivationStream` produces *before* shuffling, for the canonical
  context order (rank 0 of 1): the ordinary-token activations of contexts 0, 1, 2, ..., context by
  context, computed in the same LM batches. A stream over the cache feeds them through the same
  `shuffled_batches` buffer with the same seed, so it yields the same batches as the live stream.
- Directory `<root>/<model>-<hook>-<key>/`, key = sha256 of everything that determines the
  activations (`cache_key_fields`). Not in the key: the token budget (the cache is a prefix of one
  canonical stream; a longer budget extends it), batch and buffer sizes, anything about the SAE.
- Fixed-size shards of whole LM batches, `.npy` (float32, or bfloat16 stored as uint16), so they
  can also be memory-mapped; `manifest.json` (key fields, shards, per-context row counts, sha256
  and byte size of every shard, d_in, total tokens) is written last, atomically.
- An `fcntl.flock` on `<dir>/.lock`: builders hold it exclusively, readers share it while they
  check and open shards. Concurrent jobs build once; the others wait and reuse. A builder that
  dies releases the lock with its process; its temporary files are removed by the next builder.
- Every shard is checked against the manifest (size and sha256) before use; a bad shard is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.streams import ContextSource, resumable_shuffled_batches
from sae_sweeps.models import HookPoint, LanguageModel

log = logging.getLogger("sae_sweeps.activation_cache")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
BUILD_LOG = "builds.log"
DEFAULT_SHARD_BYTES = 256 * 2**20
_STORAGE = {"float32": (torch.float32, np.float32), "bfloat16": (torch.bfloat16, np.uint16)}


class CacheError(RuntimeError):
    """The cache cannot be built or read (no disk space, unusable directory...)."""


# -- the key ---------------------------------------------------------------------------------------
def weights_fingerprint(module: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """sha256 over every parameter's name, shape, dtype and an evenly strided sample of its values:
    any real change of weights changes it, and it costs milliseconds even for large models."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Where the text comes from, and for local or packaged files, which files (name and size;
    mtime too for local files) so that edited text gets a new cache."""
    from sae_sweeps.data.text import local_text_files
    from sae_sweeps.models.loading import package_root

    if data.get("path") is not None:
        files = local_text_files(str(data.path))
        listing = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        return {"path": str(data.path), "text_column": data.get("text_column", "text"), "files": _sha(listing)}
    if data.get("hub_name") is not None:
        return {
            "hub_name": data.hub_name, "hub_config": data.get("hub_config"),
            "hub_split": data.get("hub_split"), "text_column": data.get("text_column", "text"),
        }
    import glob as globlib

    root = package_root(data.package)
    files = sorted(globlib.glob(str(root / data.package_glob)))
    listing = [(os.path.relpath(f, root), os.stat(f).st_size) for f in files]
    try:
        version = importlib.metadata.version(data.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"package": data.package, "version": version, "glob": data.package_glob, "files": _sha(listing)}


def cache_key_fields(
    model: LanguageModel, hook: HookPoint, data: Any, storage_dtype: str = "float32", hf_name: str | None = None
) -> dict[str, Any]:
    """Everything that determines the cached activations, as JSON. Change any and the key changes."""
    probe = model.activations_at(torch.full((1, 2), model.bos_token_id, device=model.device), hook)
    device = model.device
    numerics = {"device": device.type, "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        numerics["allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return {
        "format": FORMAT_VERSION,
        "model": {"name": model.name, "hf_name": hf_name, "weights": weights_fingerprint(model.bridge)},
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
        "special_token_ids": sorted(model.special_token_ids),
        "bos_token_id": model.bos_token_id,
        "eos_token_id": model.eos_token_id,
        "hook": hook.name,
        "d_in": int(probe.shape[-1]),
        "activation_dtype": str(probe.dtype).removeprefix("torch."),
        "storage_dtype": storage_dtype,
        "numerics": numerics,
        "data": {
            **data_fingerprint(data),
            "context_size": int(data.context_size),
            "shuffle_seed": int(data.shuffle_seed),
            "holdout_every": int(data.holdout_every),
        },
    }


def cache_key(fields: dict[str, Any]) -> str:
    return _sha(fields)[:20]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# -- how much a run needs ----------------------------------------------------------------------------
class Requirement(Protocol):
    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        """Canonical contexts needed, or None when `rows_per_context` ends first (the whole corpus)."""


@dataclass(frozen=True)
class StreamBudget:
    """What `n_batches` batches of an `ActivationStream` per rank pull from the context stream.

    Replays the shuffle buffer's arithmetic on row counts (no activations, no randomness), so the
    cache holds exactly the contexts the live stream would have consumed, including the one batch
    Lightning's loader fetches ahead (`margin_batches`). Each buffer refill emits ~buffer_tokens/2
    tokens at once, so a larger margin can cost a whole refill of extra contexts; reading past
    the cache is still correct (the stream extends it).
    """

    n_batches: int
    batch_size: int
    buffer_tokens: int
    lm_batch_size: int
    world_size: int = 1
    margin_batches: int = 1

    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        target = self.n_batches + self.margin_batches
        group = [0] * self.world_size
        in_group = [0] * self.world_size
        pooled = [0] * self.world_size
        emitted = [0] * self.world_size
        done = [False] * self.world_size
        remaining = self.world_size
        for index, rows in enumerate(rows_per_context):
            r = index % self.world_size
            if done[r]:
                continue
            group[r] += rows
            in_group[r] += 1
            if in_group[r] < self.lm_batch_size:
                continue
            pooled[r] += group[r]
            group[r] = in_group[r] = 0
            if pooled[r] < self.buffer_tokens:
                continue
            n_out = max(pooled[r] // 2 // self.batch_size, 1) * self.batch_size
            emitted[r] += math.ceil(n_out / self.batch_size)
            pooled[r] -= n_out
            if emitted[r] >= target:
                done[r] = True
                remaining -= 1
                if remaining == 0:
                    return index + 1
        return None


@dataclass(frozen=True)
class AtLeastContexts:
    n: int

    def contexts_needed(self, rows_per_context: Iterable[int]) -> int | None:
        seen = 0
        for seen, _ in enumerate(rows_per_context, start=1):
            if seen >= self.n:
                return self.n
        return None


# -- locking and files -------------------------------------------------------------------------------
@contextmanager
def file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """flock on `path`; says so when it has to wait for another process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            _announce(f"activation cache: waiting for another process that is building {path.parent}")
            fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _announce(message: str) -> None:
    log.info(message)
    if not logging.getLogger().hasHandlers():  # outside Hydra nobody prints the log: print it
        print(message, file=sys.stderr, flush=True)


def _file_sha256(path: Path) -> str:
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
        _VERIFIED[memo] = _file_sha256(path)
    return _VERIFIED[memo] == entry["sha256"]


def _write_atomically(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
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


# -- the cache ----------------------------------------------------------------------------------------
class ActivationCache:
    """The cache for one key: builds, extends or repairs it under the lock, and opens readers."""

    def __init__(
        self,
        root: str | Path,
        fields: dict[str, Any],
        model: LanguageModel,
        hook: HookPoint,
        contexts: ContextSource,
        lm_batch_size: int,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        progress: Callable[[Iterable[Tensor], int], Iterable[Tensor]] = lambda contexts, total: contexts,
    ) -> None:
        self.fields, self.model, self.hook, self.contexts = fields, model, hook, contexts
        self.progress = progress  # wraps the LM pass over (contexts, how many): a console progress bar
        self.key = cache_key(fields)
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{model.name}-{hook.name}")
        self.directory = Path(root).expanduser() / f"{slug}-{self.key}"
        self.lm_batch_size = int(lm_batch_size)
        self.d_in = int(fields["d_in"])
        self.storage_dtype = fields["storage_dtype"]
        if self.storage_dtype not in _STORAGE:
            raise CacheError(f"data.activation_cache_dtype={self.storage_dtype!r}: use one of {sorted(_STORAGE)}")
        row_bytes = self.d_in * torch.tensor([], dtype=_STORAGE[self.storage_dtype][0]).element_size()
        context_bytes = row_bytes * int(fields["data"]["context_size"])
        groups = max(1, shard_bytes // (context_bytes * self.lm_batch_size))
        self.shard_contexts = groups * self.lm_batch_size  # shards hold whole LM batches
        self.last_build: dict[str, Any] | None = None

    # manifest --------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != self.key:
            return None
        return manifest

    @staticmethod
    def _context_rows(manifest: dict[str, Any]) -> list[int]:
        return [rows for shard in manifest["shards"] for rows in shard["context_rows"]]

    def _covers(self, manifest: dict[str, Any], requirement: Requirement) -> bool:
        return manifest["complete_epoch"] or requirement.contexts_needed(self._context_rows(manifest)) is not None

    def _valid_shards(self, manifest: dict[str, Any]) -> list[bool]:
        return [shard_is_valid(self.directory / s["file"], s) for s in manifest["shards"]]

    # public ------------------------------------------------------------------------------------
    def open(self, requirement: Requirement) -> CacheReader:
        """A reader over a cache that satisfies `requirement`, building what is missing or broken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / LOCK
        for _ in range(3):
            with file_lock(lock, exclusive=False):
                manifest = self.read_manifest()
                if manifest is not None and self._covers(manifest, requirement) and all(self._valid_shards(manifest)):
                    return CacheReader(self.directory, manifest)
            with file_lock(lock, exclusive=True):
                self._build(requirement)
        raise CacheError(f"activation cache at {self.directory}: still incomplete after rebuilding it")

    # building (exclusive lock held) -----------------------------------------------------------
    def _canonical_contexts(self) -> Iterator[Tensor]:
        return self.contexts()

    def _rows(self, context_T: Tensor) -> int:
        return int((~self.model.special_token_mask(context_T)).sum())

    def _build(self, requirement: Requirement) -> None:
        old = self.read_manifest()
        if old is not None and (old["shard_contexts"] != self.shard_contexts or old["lm_batch_size"] != self.lm_batch_size):
            # another job built it with other batch settings: adopt its layout so its shards stay valid
            self.shard_contexts, self.lm_batch_size = old["shard_contexts"], old["lm_batch_size"]
        valid = self._valid_shards(old) if old is not None else []
        if old is not None and all(valid) and self._covers(old, requirement):
            return  # someone else finished it while we waited for the lock
        started = time.perf_counter()

        # 1. how many contexts (tokenisation only), rounded up to whole LM batches
        contexts = self._canonical_contexts()
        rows: list[int] = []

        def counted() -> Iterator[int]:
            for context in contexts:
                rows.append(self._rows(context))
                yield rows[-1]

        needed = requirement.contexts_needed(counted())
        complete = needed is None
        n_contexts = len(rows)
        if needed is not None:
            n_contexts = math.ceil(needed / self.lm_batch_size) * self.lm_batch_size
            while len(rows) < n_contexts:
                context = next(contexts, None)
                if context is None:
                    complete, n_contexts = True, len(rows)
                    break
                rows.append(self._rows(context))
        if n_contexts == 0:
            raise ValueError("the training data produced no full context; use more text or a shorter data.context_size")
        rows = rows[:n_contexts]

        # 2. which shards to (re)build: keep valid old shards with the same context range
        n_shards = math.ceil(n_contexts / self.shard_contexts)
        keep: dict[int, dict[str, Any]] = {}
        if old is not None:
            for entry, ok in zip(old["shards"], valid):
                index = entry["first_context"] // self.shard_contexts
                expected = min(self.shard_contexts, n_contexts - entry["first_context"])
                if ok and entry["n_contexts"] == expected:
                    keep[index] = entry
        todo = [i for i in range(n_shards) if i not in keep]
        itemsize = torch.tensor([], dtype=_STORAGE[self.storage_dtype][0]).element_size()
        todo_rows = sum(sum(rows[i * self.shard_contexts : (i + 1) * self.shard_contexts]) for i in todo)
        total_rows = sum(rows)
        gigabytes = todo_rows * self.d_in * itemsize / 1e9
        what = "building" if old is None else "extending/repairing"
        _announce(
            f"activation cache: {what} {todo_rows:,} tokens x {self.d_in} dims = {gigabytes:.3f} GB "
            f"({self.storage_dtype}; {total_rows:,} tokens in all) at {self.directory}"
        )
        free = shutil.disk_usage(self.directory).free
        if todo_rows * self.d_in * itemsize > free:
            raise CacheError(f"activation cache needs {gigabytes:.2f} GB at {self.directory}; only {free / 1e9:.2f} GB free")

        # 3. run the LM on the LM batches of the shards to build, in the live stream's batches
        for stale in self.directory.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
        entries = dict(keep)
        if todo:
            self._run_lm(todo, rows, n_contexts, entries)

        # 4. the manifest, last and atomically; then drop files it no longer lists
        shards = [entries[i] for i in range(n_shards)]
        manifest = {
            "format": FORMAT_VERSION,
            "key": self.key,
            "key_fields": self.fields,
            "d_in": self.d_in,
            "storage_dtype": self.storage_dtype,
            "activation_dtype": self.fields["activation_dtype"],
            "lm_batch_size": self.lm_batch_size,
            "shard_contexts": self.shard_contexts,
            "n_contexts": n_contexts,
            "n_tokens": total_rows,
            "complete_epoch": complete,
            "shards": shards,
            "bytes": sum(s["bytes"] for s in shards),
        }
        _write_atomically(self.directory / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)), mode="w")
        listed = {s["file"] for s in shards} | {MANIFEST, LOCK, BUILD_LOG}
        for path in self.directory.iterdir():
            if path.name not in listed:
                path.unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        self.last_build = {"shards_built": len(todo), "tokens_built": todo_rows, "seconds": seconds}
        with open(self.directory / BUILD_LOG, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "time": time.time(), **self.last_build}) + "\n")
        _announce(f"activation cache: wrote {len(todo)} shard(s) in {seconds:.1f} s; {total_rows:,} tokens at {self.directory}")

    def _run_lm(self, todo: list[int], rows: list[int], n_contexts: int, entries: dict[int, dict[str, Any]]) -> None:
        todo_set = set(todo)
        last_needed = min(n_contexts, (max(todo) + 1) * self.shard_contexts)
        pending: dict[int, list[Tensor]] = {}
        group: list[Tensor] = []
        group_start = 0
        torch_dtype, _ = _STORAGE[self.storage_dtype]

        def flush_group() -> None:
            shard = group_start // self.shard_contexts
            if shard in todo_set:
                tokens_BT = torch.stack(group).to(self.model.device)
                acts_BTD = self.model.activations_at(tokens_BT, self.hook)
                acts = acts_BTD[~self.model.special_token_mask(tokens_BT)]
                pending.setdefault(shard, []).append(acts.to("cpu", torch_dtype))
                end = group_start + len(group)
                if end == min(n_contexts, (shard + 1) * self.shard_contexts):
                    entries[shard] = self._write_shard(shard, torch.cat(pending.pop(shard)), rows, n_contexts)

        for index, context in enumerate(self.progress(_islice_from(self._canonical_contexts(), 0, last_needed), last_needed)):
            if not group:
                group_start = index
            group.append(context)
            if len(group) == self.lm_batch_size or index + 1 == last_needed:
                flush_group()
                group = []

    def _write_shard(self, shard: int, acts: Tensor, rows: list[int], n_contexts: int) -> dict[str, Any]:
        first = shard * self.shard_contexts
        last = min(n_contexts, first + self.shard_contexts)
        context_rows = rows[first:last]
        if len(acts) != sum(context_rows):
            raise CacheError(f"shard {shard}: {len(acts)} rows from the LM but {sum(context_rows)} ordinary tokens")
        array = acts.contiguous().view(torch.uint16).numpy() if acts.dtype == torch.bfloat16 else acts.numpy()
        name = f"shard_{shard:05d}_{first:08d}_{last - first}.npy"
        path = self.directory / name
        _write_atomically(path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False))
        return {
            "file": name,
            "first_context": first,
            "n_contexts": last - first,
            "rows": int(len(acts)),
            "bytes": path.stat().st_size,
            "sha256": _file_sha256(path),
            "context_rows": context_rows,
        }


def _islice_from(it: Iterator[Tensor], start: int, stop: int) -> Iterator[Tensor]:
    for index, item in enumerate(it):
        if index >= stop:
            return
        if index >= start:
            yield item


class CacheReader:
    """Reads the rows of any contexts from a checked cache with positioned reads (no mmap, so the
    page cache does not count against the process's resident memory)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory, self.manifest = directory, manifest
        self.d_in: int = manifest["d_in"]
        self.n_contexts: int = manifest["n_contexts"]
        self.complete: bool = manifest["complete_epoch"]
        self.shard_contexts: int = manifest["shard_contexts"]
        self.torch_storage, self.np_storage = _STORAGE[manifest["storage_dtype"]]
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


class CachedActivationStream(IterableDataset):
    """`ActivationStream`'s batches, read from an activation cache instead of running the LM.

    Same LM-batch chunks (contexts r, r+R, ... in groups of lm_batch_size, repeating the corpus
    if the budget outruns it), same shuffle buffer, same seed: the same batches. `start_batch=N`
    starts at batch N; skipping is cheap (row counts come from the manifest).
    If the loader reads past what the cache holds, the cache is extended (under its lock).
    """

    def __init__(
        self,
        cache: ActivationCache,
        requirement: Requirement,
        batch_size: int,
        lm_batch_size: int,
        buffer_tokens: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cache = cache
        self.reader = cache.open(requirement)
        self.batch_size, self.lm_batch_size, self.buffer_tokens = batch_size, lm_batch_size, buffer_tokens
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_batch = int(start_batch)
        self.device = torch.device(device)

    def context_groups(self) -> Iterator[list[int]]:
        group: list[int] = []
        for epoch in range(1 << 62):
            if epoch == 1:
                warnings.warn("the training budget exceeds the corpus: starting a second pass over it")
            index = self.rank
            while True:
                if index >= self.reader.n_contexts:
                    if self.reader.complete:
                        break
                    self.reader = self.cache.open(AtLeastContexts(self.reader.n_contexts * 2))
                    continue
                group.append(index)
                if len(group) == self.lm_batch_size:
                    yield group
                    group = []
                index += self.world_size
            if self.rank >= self.reader.n_contexts:
                raise ValueError("the training data produced no full context; use more text or a shorter data.context_size")
        return

    def load(self, contexts: list[int]) -> Tensor:
        return self.reader.read(contexts).to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed + self.rank)
        return resumable_shuffled_batches(
            self.context_groups(), lambda group: self.reader.rows(group), self.load,
            self.buffer_tokens, self.batch_size, generator, self.start_batch,
        )
