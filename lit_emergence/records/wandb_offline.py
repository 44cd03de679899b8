"""Reading an offline W&B run back from its files, without W&B's servers or an account.

A run made with ``--wandb offline`` lives in ``RUN_DIR/wandb/offline-run-<time>-<id>/``: its
records (run settings, logged history, summary, alerts) in ``run-<id>.wandb`` and its files
(media, tables, saved files) under ``files/``. :func:`read_offline_run` reads both, so that
what a run will show once synced can be checked before it is uploaded (the tests do this).

The ``.wandb`` file is a LevelDB-style log (32 KiB blocks of checksummed chunks after a
``:W&B`` header) of W&B's protobuf ``Record`` messages; the messages are parsed with the
protobuf classes that come with the installed ``wandb``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_CHUNK = struct.Struct("<IHB")  # crc32c, length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline W&B run holds.

    Attributes:
        directory: The ``offline-run-*`` directory.
        run_id: The W&B run id.
        name: Display name.
        project: Project.
        group: Group (``""``: none).
        job_type: Job type (``""``: none).
        tags: Tags.
        history_keys: The keys logged to the history (one chart each in the W&B workspace),
            W&B's own (``_step``, ``_runtime``, ``_timestamp``) left out.
        history: Every logged history row, as ``{key: value}`` (media as their JSON dicts).
        summary: The run summary, key -> value (media as their JSON dicts).
        alerts: ``(title, text)`` of every alert raised.
        files: Paths of the files under ``files/``, relative to it.
        exit_code: The run's exit code once W&B has written its last record (None: the run
            is still being written, or was killed).
    """

    directory: Path
    run_id: str = ""
    name: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    history_keys: set[str] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def tables(self, key: str) -> list[dict[str, Any]]:
        """Every version of the table logged under ``key``, in order: ``columns``, ``data``."""
        found = []
        for row in self.history:
            value = row.get(key)
            if isinstance(value, dict) and "path" in value:
                found.append(json.loads((self.directory / "files" / value["path"]).read_text()))
        return found

    def summary_table(self, key: str) -> dict[str, Any]:
        """The table stored in the run summary under ``key``: ``columns``, ``data``."""
        return json.loads((self.directory / "files" / self.summary[key]["path"]).read_text())


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run directories of a run directory, oldest first."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))


def read_offline_run(directory: str | Path) -> OfflineRun:
    """Read an ``offline-run-*`` directory (see the module docstring).

    Args:
        directory: The ``offline-run-*`` directory, or a run directory holding exactly one.

    Returns:
        The run.

    Raises:
        FileNotFoundError: If there is no ``.wandb`` file.
        ValueError: If the file is not a W&B run file.
    """
    directory = Path(directory)
    if not directory.name.startswith("offline-run-"):
        runs = offline_runs(directory)
        if len(runs) != 1:
            raise FileNotFoundError(f"{directory}: {len(runs)} offline W&B runs, expected one")
        directory = runs[0]
    files = sorted(directory.glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {directory}")
    run = OfflineRun(directory=directory)
    for record in _records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.name, run.project = info.run_id, info.display_name, info.project
            run.group, run.job_type, run.tags = info.run_group, info.job_type, list(info.tags)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _assign(row, _path(item), json.loads(item.value_json))
            run.history.append(row)
            run.history_keys |= {key for key in row if not key.startswith("_")}
        elif kind == "summary":
            for item in record.summary.update:
                _assign(run.summary, _path(item), json.loads(item.value_json))
        elif kind == "alert":
            run.alerts.append((record.alert.title, record.alert.text))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    root = directory / "files"
    run.files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return run


def _path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _assign(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            return
    target[path[-1]] = value


def _records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, _, _ = _HEADER.unpack_from(data)
    if ident != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    position, pending = _HEADER.size, b""
    while position + _CHUNK.size <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK.size:  # the rest of a block too short for a chunk header: padding
            position += left
            continue
        _, length, kind = _CHUNK.unpack_from(data, position)
        position += _CHUNK.size
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left - _CHUNK.size
            continue
        chunk = data[position : position + length]
        position += length
        if kind == _FIRST:
            pending = chunk
            continue
        if kind == _MIDDLE:
            pending += chunk
            continue
        if kind == _LAST:
            chunk, pending = pending + chunk, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record
