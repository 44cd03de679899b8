"""Append-only CSV histories that survive a crash and continue exactly on resume.

Each measurement appends complete rows in one write, then flushes and fsyncs, so a row is either
fully on disk or absent. Opening a history repairs a torn last line (a crash mid-write). On
resume from a checkpoint taken at step ``S``, :meth:`CSVHistory.truncate_after` drops rows newer
than ``S`` (they were measured after the checkpoint and will be measured again), atomically.
Plain CSV, so anyone can read the results without this package.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest round-tripping text
    return str(value)


class CSVHistory:
    """One CSV file of measurement rows with a fixed header and a ``step`` column.

    Args:
        path: File to append to (created with its header if missing).
        fieldnames: Column names; must include ``"step"``.
    """

    def __init__(self, path: str | os.PathLike, fieldnames: Sequence[str]) -> None:
        if "step" not in fieldnames:
            raise ValueError(f"a history needs a 'step' column, got {list(fieldnames)}")
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_atomically([])
        else:
            self._check_header_and_repair()

    # ----------------------------------------------------------------------------- writing
    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (missing columns are left empty) in one write, then flush and fsync."""
        text = self._render(rows)
        if not text:
            return
        with self.path.open("a", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop every row whose step is greater than ``step`` (atomic rewrite)."""
        rows = [row for row in self.read() if int(row["step"]) <= step]
        self._write_atomically(rows)

    # ----------------------------------------------------------------------------- reading
    def read(self) -> list[dict[str, str]]:
        """All rows as dicts of strings."""
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def steps(self) -> list[int]:
        """Return the distinct steps present, in file order."""
        seen: dict[int, None] = {}
        for row in self.read():
            seen.setdefault(int(row["step"]), None)
        return list(seen)

    # ----------------------------------------------------------------------------- internals
    def _render(self, rows: Iterable[Mapping[str, Any]], header: bool = False) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fieldnames, lineterminator="\n")
        if header:
            writer.writeheader()
        for row in rows:
            unknown = set(row) - set(self.fieldnames)
            if unknown:
                raise KeyError(f"columns {sorted(unknown)} are not in {self.path.name}'s header")
            writer.writerow({key: _format(value) for key, value in row.items()})
        return buffer.getvalue()

    def _write_atomically(self, rows: Iterable[Mapping[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            handle.write(self._render(rows, header=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _check_header_and_repair(self) -> None:
        data = self.path.read_bytes()
        header = data.split(b"\n", 1)[0].decode()
        if next(csv.reader([header])) != self.fieldnames:
            raise ValueError(
                f"{self.path} has columns {header!r}, expected {','.join(self.fieldnames)}: "
                "move the old file away or use another run directory"
            )
        if not data.endswith(b"\n"):
            # A crash mid-append left a partial row: keep only complete lines.
            complete = data[: data.rfind(b"\n") + 1]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(complete)
            os.replace(tmp, self.path)
