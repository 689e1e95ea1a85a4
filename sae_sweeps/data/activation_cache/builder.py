"""`ActivationCache`: builds, extends or repairs the cache for one key under its lock, and opens
readers over it. A build counts the contexts the requirement needs, keeps the valid shards, runs
the LM on the LM batches of the others, then writes the manifest last."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sae_sweeps.data.activation_cache.budget import Requirement
from sae_sweeps.data.activation_cache.files import (
    BUILD_LOG,
    LOCK,
    MANIFEST,
    STORAGE,
    CacheError,
    announce,
    file_lock,
    shard_is_valid,
    write_atomically,
    write_hashed_atomically,
)
from sae_sweeps.data.activation_cache.key import FORMAT_VERSION, cache_key
from sae_sweeps.data.activation_cache.reader import CacheReader
from sae_sweeps.data.streams import ContextSource
from sae_sweeps.models import HookPoint, LanguageModel

DEFAULT_SHARD_BYTES = 256 * 2**20

Shard = dict[str, Any]
"""One manifest entry: file, first_context, n_contexts, rows, bytes, sha256, context_rows."""


class ContextCount(NamedTuple):
    """The canonical contexts a build covers."""

    rows: list[int]
    """Ordinary-token rows of each context, in canonical order (whole LM batches)."""
    complete: bool
    """The corpus ended before the requirement was met: the cache holds the whole epoch."""


class ShardPlan(NamedTuple):
    """Which shards of the new layout a build keeps and which it computes."""

    keep: dict[int, Shard]
    """Shard index -> the old manifest's entry, for valid shards with the same context range."""
    todo: list[int]
    """Shard indices to compute with the LM."""
    n_shards: int
    """Shards in the new layout."""


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
        self.progress = progress
        """Wraps the build's LM pass over its contexts (with their count): the console's progress bar."""
        self.key = cache_key(fields)
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{model.name}-{hook.key}")
        self.directory = Path(root).expanduser() / f"{slug}-{self.key}"
        self.lm_batch_size = int(lm_batch_size)
        self.d_in = int(fields["d_in"])
        self.storage_dtype = fields["storage_dtype"]
        if self.storage_dtype not in STORAGE:
            raise CacheError(f"data.activation_cache_dtype={self.storage_dtype!r}: use one of {sorted(STORAGE)}")
        self.itemsize = torch.tensor([], dtype=STORAGE[self.storage_dtype][0]).element_size()
        context_bytes = self.d_in * self.itemsize * int(fields["data"]["context_size"])
        groups = max(1, shard_bytes // (context_bytes * self.lm_batch_size))
        self.shard_contexts = groups * self.lm_batch_size  # shards hold whole LM batches

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
    def _build(self, requirement: Requirement) -> None:
        old = self.read_manifest()
        if old is not None:
            # another job may have built it with other batch settings: adopt its layout so its shards stay valid
            self.shard_contexts, self.lm_batch_size = old["shard_contexts"], old["lm_batch_size"]
        valid = self._valid_shards(old) if old is not None else []
        if old is not None and all(valid) and self._covers(old, requirement):
            return  # someone else finished it while we waited for the lock
        started = time.perf_counter()
        count = self._count_contexts(requirement)
        plan = self._plan_shards(old, valid, len(count.rows))
        todo_rows = self._announce_and_check_space(plan, count.rows, rebuilding=old is not None)
        for stale in self.directory.glob("*.tmp*"):  # left by a builder that died
            stale.unlink(missing_ok=True)
        shards = dict(plan.keep)
        if plan.todo:
            self._run_lm(plan.todo, count.rows, len(count.rows), shards)
        self._write_manifest([shards[i] for i in range(plan.n_shards)], count)
        self._log_build(len(plan.todo), todo_rows, time.perf_counter() - started, sum(count.rows))

    def _rows(self, context_T: Tensor) -> int:
        return int((~self.model.special_token_mask(context_T)).sum())

    def _count_contexts(self, requirement: Requirement) -> ContextCount:
        """Row counts of the contexts the requirement needs (tokenisation only), rounded up to
        whole LM batches; all of them when the corpus ends first."""
        contexts = self.contexts()
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
        return ContextCount(rows[:n_contexts], complete)

    def _plan_shards(self, old: dict[str, Any] | None, valid: list[bool], n_contexts: int) -> ShardPlan:
        """Keep the valid old shards whose context range is unchanged; compute the rest."""
        n_shards = math.ceil(n_contexts / self.shard_contexts)
        keep: dict[int, Shard] = {}
        if old is not None:
            for entry, ok in zip(old["shards"], valid):
                index = entry["first_context"] // self.shard_contexts
                expected = min(self.shard_contexts, n_contexts - entry["first_context"])
                if ok and entry["n_contexts"] == expected:
                    keep[index] = entry
        return ShardPlan(keep, [i for i in range(n_shards) if i not in keep], n_shards)

    def _announce_and_check_space(self, plan: ShardPlan, rows: list[int], rebuilding: bool) -> int:
        """Say what will be written before writing it; fail early if the disk lacks the space.
        Returns the number of rows (tokens) to compute."""
        todo_rows = sum(sum(rows[i * self.shard_contexts : (i + 1) * self.shard_contexts]) for i in plan.todo)
        todo_bytes = todo_rows * self.d_in * self.itemsize
        what = "extending/repairing" if rebuilding else "building"
        announce(
            f"activation cache: {what} {todo_rows:,} tokens x {self.d_in} dims = {todo_bytes / 1e9:.3f} GB "
            f"({self.storage_dtype}; {sum(rows):,} tokens in all) at {self.directory}"
        )
        free = shutil.disk_usage(self.directory).free
        if todo_bytes > free:
            raise CacheError(f"activation cache needs {todo_bytes / 1e9:.2f} GB at {self.directory}; only {free / 1e9:.2f} GB free")
        return todo_rows

    def _write_manifest(self, shards: list[Shard], count: ContextCount) -> None:
        """The manifest, last and atomically; then drop the files it no longer lists."""
        manifest = {
            "format": FORMAT_VERSION,
            "key": self.key,
            "key_fields": self.fields,
            "d_in": self.d_in,
            "storage_dtype": self.storage_dtype,
            "activation_dtype": self.fields["activation_dtype"],
            "lm_batch_size": self.lm_batch_size,
            "shard_contexts": self.shard_contexts,
            "n_contexts": len(count.rows),
            "n_tokens": sum(count.rows),
            "complete_epoch": count.complete,
            "shards": shards,
            "bytes": sum(s["bytes"] for s in shards),
        }
        write_atomically(self.directory / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)), mode="w")
        listed = {s["file"] for s in shards} | {MANIFEST, LOCK, BUILD_LOG}
        for path in self.directory.iterdir():
            if path.name not in listed:
                path.unlink(missing_ok=True)

    def _log_build(self, shards_built: int, tokens_built: int, seconds: float, total_rows: int) -> None:
        record = {"shards_built": shards_built, "tokens_built": tokens_built, "seconds": seconds}
        with open(self.directory / BUILD_LOG, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "time": time.time(), **record}) + "\n")
        announce(f"activation cache: wrote {shards_built} shard(s) in {seconds:.1f} s; {total_rows:,} tokens at {self.directory}")

    def _run_lm(self, todo: list[int], rows: list[int], n_contexts: int, entries: dict[int, Shard]) -> None:
        """Compute the shards `todo` in the live stream's LM batches; add their entries to `entries`."""
        todo_set = set(todo)
        last_needed = min(n_contexts, (max(todo) + 1) * self.shard_contexts)
        pending: dict[int, list[Tensor]] = {}
        group: list[Tensor] = []
        group_start = 0
        torch_dtype, _ = STORAGE[self.storage_dtype]

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

        for index, context in enumerate(self.progress(islice(self.contexts(), last_needed), last_needed)):
            if not group:
                group_start = index
            group.append(context)
            if len(group) == self.lm_batch_size or index + 1 == last_needed:
                flush_group()
                group = []

    def _write_shard(self, shard: int, acts: Tensor, rows: list[int], n_contexts: int) -> Shard:
        first = shard * self.shard_contexts
        last = min(n_contexts, first + self.shard_contexts)
        context_rows = rows[first:last]
        if len(acts) != sum(context_rows):
            raise CacheError(f"shard {shard}: {len(acts)} rows from the LM but {sum(context_rows)} ordinary tokens")
        array = acts.contiguous().view(torch.uint16).numpy() if acts.dtype == torch.bfloat16 else acts.numpy()
        name = f"shard_{shard:05d}_{first:08d}_{last - first}.npy"
        path = self.directory / name
        size, sha256 = write_hashed_atomically(
            path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        )
        return {
            "file": name,
            "first_context": first,
            "n_contexts": last - first,
            "rows": int(len(acts)),
            "bytes": size,
            "sha256": sha256,
            "context_rows": context_rows,
        }
