"""Read what an offline W&B run recorded, so tests assert on the run itself.

An offline run lives in ``<dir>/wandb/offline-run-<time>-<id>/`` and writes its records to
``run-<id>.wandb``: a LevelDB-style log. Layout, as wandb-core 0.31 writes it (and as the
older Python ``wandb/sdk/internal/datastore.py`` did):

- a 7-byte file header: ``b":W&B"``, magic ``0xBEE1`` (little endian) and version ``0``;
- then 32 KiB blocks (the first one starts with the file header); each record chunk has a
  7-byte header: CRC32 (4, little endian, IEEE ``zlib.crc32`` over the type byte and the
  data), length (2, little endian) and type (1: full, 2: first, 3: middle, 4: last);
  a record that does not fit in a block is split into first/middle/last chunks, and a block
  tail shorter than a chunk header is zero padding;
- each reassembled payload is a serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK_SIZE = 32 * 1024
FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_run_dirs(root: str | Path) -> list[Path]:
    """Every ``offline-run-*`` folder under ``root`` (the ``wandb/`` folder or its parent)."""
    root = Path(root)
    wandb_dir = root if root.name == "wandb" else root / "wandb"
    # Oldest first: by the start time in the name (to the second), then, for runs started in the same
    # second (their names then sort by run id), by when the folder last changed (runs here are sequential).
    folders = [p for p in wandb_dir.glob("offline-run-*") if p.is_dir()]
    return sorted(folders, key=lambda p: (p.name.split("-")[2], p.stat().st_mtime_ns))


def run_files(root: str | Path) -> list[Path]:
    """Every ``run-<id>.wandb`` file of the offline runs under ``root``, oldest first."""
    return [f for d in offline_run_dirs(root) for f in sorted(d.glob("run-*.wandb"))]


def read_payloads(path: str | Path) -> list[bytes]:
    """The raw record payloads of one ``.wandb`` file, checked against their CRCs."""
    data = Path(path).read_bytes()
    if data[: len(FILE_HEADER)] != FILE_HEADER:
        raise ValueError(f"{path}: not a W&B log (header {data[:7]!r})")
    payloads: list[bytes] = []
    pending: bytearray | None = None
    pos = len(FILE_HEADER)
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:  # zero padding at the end of a block
            pos += left_in_block
            continue
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if crc == length == kind == 0:  # zero padding (or a preallocated tail)
            pos += left_in_block
            continue
        start = pos + CHUNK_HEADER.size
        chunk = data[start : start + length]
        if len(chunk) < length:  # a truncated last write (the process was killed)
            break
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: CRC mismatch at byte {pos}")
        pos = start + length
        if kind == FULL:
            payloads.append(bytes(chunk))
        elif kind == FIRST:
            pending = bytearray(chunk)
        elif kind == MIDDLE and pending is not None:
            pending += chunk
        elif kind == LAST and pending is not None:
            payloads.append(bytes(pending + chunk))
            pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {kind} at byte {pos}")
    return payloads


def read_records(path: str | Path) -> list[Any]:
    """The ``Record`` protobufs of one ``.wandb`` file, in write order."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for payload in read_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _value(item: Any) -> Any:
    # History items may carry a typed value instead of JSON; config/summary use value_json.
    for typed in ("none", "boolean", "integer", "number", "text", "json"):
        if typed in {f.name for f in type(item).DESCRIPTOR.fields} and item.HasField(typed):
            return None if typed == "none" else getattr(item, typed)
    return json.loads(item.value_json) if item.value_json else None


@dataclass
class RunRecords:
    """What one offline run file recorded, decoded into plain Python values."""

    path: Path
    records: list[Any]
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    resumed: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def column(self, key: str, step_key: str = "trainer/global_step") -> dict[Any, Any]:
        """``{step: value}`` for one history key (rows without it are skipped)."""
        return {row.get(step_key): row[key] for row in self.history if key in row}


def wait_for_exit(path: str | Path, timeout: float = 15.0) -> list[Any]:
    """The records of a run file once its ``exit`` record is on disk.

    ``run.finish()`` returns before wandb-core has flushed and closed the file (it buffers
    writes), so a test that reads right after ``finish`` polls until the run is complete.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def load_run(path: str | Path, finished: bool = True) -> RunRecords:
    """Decode one ``run-<id>.wandb`` file (or the only run under a folder).

    ``finished``: wait (up to 15 s) for the run's exit record, so the file is complete.
    """
    path = Path(path)
    if path.is_dir():
        files = run_files(path) or sorted(path.glob("run-*.wandb"))
        if len(files) != 1:
            raise ValueError(f"expected one offline run under {path}, found {len(files)}: {files}")
        path = files[0]
    run = RunRecords(path=path, records=wait_for_exit(path) if finished else read_records(path))
    for record in run.records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.name = r.run_id, r.project, r.display_name
            run.group, run.job_type, run.notes = r.run_group, r.job_type, r.notes
            run.tags, run.resumed = list(r.tags), r.resumed
            for item in r.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "history":
            run.history.append({_key(item): _value(item) for item in record.history.item})
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = _value(item)
            for item in record.config.remove:
                run.config.pop(_key(item), None)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = _value(item)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "files": [entry.path for entry in a.manifest.contents],
                }
            )
        elif kind == "metric":
            m = record.metric
            run.metrics.append({"name": m.name, "glob_name": m.glob_name, "step_metric": m.step_metric})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def load_runs(root: str | Path, finished: bool = True) -> list[RunRecords]:
    """Every offline run under ``root`` (a project folder or its ``wandb/``), oldest first."""
    return [load_run(f, finished) for f in run_files(root)]
