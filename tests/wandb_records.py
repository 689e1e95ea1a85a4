"""Reading an offline wandb run back from its transaction log (run-<id>.wandb), the file that
`wandb sync` uploads: wandb 0.31's offline mode writes no files/config.yaml or wandb-summary.json."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK_BYTES = 32 * 1024  # the log is LevelDB's format: 32 KiB blocks of checksummed chunks
CHUNK_HEADER = struct.Struct("<IHB")  # crc32c, length, kind
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
FILE_HEADER_BYTES = 7  # ":W&B", magic, version


@dataclass
class OfflineRun:
    """What one offline run recorded."""

    directory: Path
    """wandb/offline-run-<time>-<id>."""
    name: str
    """The run's display name."""
    group: str
    """Its group (the sweep id)."""
    job_type: str
    """"train" for a sweep member, "sweep-analysis" for the sweep-level run."""
    tags: list[str]
    """Its tags."""
    config: dict[str, Any]
    """Its config, key -> value."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Its summary after the last update (top-level keys; nested keys joined with '/')."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict per logged row."""
    exit_code: int | None = None
    """None if the run was never finished."""


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    records, pending, position = [], b"", FILE_HEADER_BYTES
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_BYTES - position % BLOCK_BYTES
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left_in_block
            continue
        if position + CHUNK_HEADER.size + length > len(data):  # a chunk still being written
            break
        chunk = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        position += CHUNK_HEADER.size + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
    return records


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_offline_run(directory: Path, hang_guard_s: float = 120.0) -> OfflineRun:
    """The run in `directory` once its log holds the exit record: wandb-core writes the log in
    blocks and may close it just after `finish()` has returned, so a log read at once can still
    be only its header (seen on a loaded CI machine)."""
    logs = list(directory.glob("run-*.wandb"))
    # wandb's own logs say why a run directory holds no transaction log
    assert len(logs) == 1, f"{directory} holds {len(logs)} transaction logs; wandb logged:\n{_wandb_debug_logs(directory)}"
    (log,) = logs
    deadline = time.monotonic() + hang_guard_s
    while ((run := _parse(log)) is None or run.exit_code is None) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run is not None, f"{log} holds no run record after {hang_guard_s:.0f} s; wandb logged:\n{_wandb_debug_logs(directory)}"
    return run


def _parse(log: Path) -> OfflineRun | None:
    run: OfflineRun | None = None
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code = None
    for raw in _records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = OfflineRun(log.parent, r.display_name, r.run_group, r.job_type, list(r.tags), _items(r.config.update))
        elif kind == "summary":
            summary |= _items(record.summary.update)
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    if run is None:
        return None
    run.summary, run.history, run.exit_code = summary, history, exit_code
    return run


def _wandb_debug_logs(directory: Path) -> str:
    paths = [path for path in [*directory.glob("logs/*.log"), *directory.parent.glob("debug*.log")] if path.exists()]
    return "\n".join(f"--- {path}\n{path.read_text()[-3000:]}" for path in paths)


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under `root`, at any depth."""
    return [read_offline_run(d) for d in sorted(root.rglob("offline-run-*")) if d.is_dir()]
