"""Append-only CSV histories that survive a crash, and the one reader of them.

Writing (:class:`CSVHistory`): each measurement appends complete rows in one write, then
flushes and fsyncs, so a row is either fully on disk or absent. Opening a history repairs a
torn last line (a crash mid-write). On resume from a checkpoint taken at step ``S``,
:meth:`CSVHistory.truncate_after` drops rows newer than ``S`` (they were measured after the
checkpoint and will be measured again), atomically.

Reading (:func:`read_rows`): every reader of a history — the detector while a run is still
writing, the report, a resumed callback — goes through one function that ignores a torn last
line and sets aside malformed rows, saying which lines they were.

Plain CSV, so anyone can read the results without this package.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_emergence.records.files import append_text, replace_text, replaced


@dataclass(frozen=True)
class Rows:
    """What :func:`read_rows` found in a CSV file.

    Attributes:
        fieldnames: The header (empty for a missing or empty file).
        rows: The well-formed complete rows, as dicts of strings, in file order.
        torn: Whether a torn last line (no newline yet: a crash or a write in progress) was
            ignored.
        malformed: Line numbers (1-based, the header is line 1) of rows set aside: a number of
            cells other than the header's, or a ``step`` that is not an integer.
    """

    fieldnames: list[str]
    rows: list[dict[str, str]]
    torn: bool = False
    malformed: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_rows(path: str | os.PathLike) -> Rows:
    """Read a history CSV without changing it.

    A last line without its newline is a row still being written (or cut by a crash) and is
    ignored; rows with the wrong number of cells, or a ``step`` that is not an integer, are
    left out and listed in :attr:`Rows.malformed`.

    Args:
        path: The CSV file; a missing file reads as no rows.

    Returns:
        The header and the complete, well-formed rows.
    """
    path = Path(path)
    if not path.is_file():
        return Rows(fieldnames=[], rows=[])
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    torn = len(complete) < len(text)
    reader = csv.reader(io.StringIO(complete))
    fieldnames = next(reader, [])
    has_step = "step" in fieldnames
    rows: list[dict[str, str]] = []
    malformed: list[int] = []
    for cells in reader:
        line = reader.line_num
        if not cells:
            continue  # a blank line, as csv.DictReader skips it
        row = dict(zip(fieldnames, cells, strict=False))
        if len(cells) != len(fieldnames) or (has_step and not _is_integer(row["step"])):
            malformed.append(line)
            continue
        rows.append(row)
    return Rows(fieldnames=fieldnames, rows=rows, torn=torn, malformed=malformed)


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
        if text:
            append_text(self.path, text)

    def truncate_after(self, step: int) -> None:
        """Drop every row whose step is greater than ``step`` (atomic rewrite)."""
        rows = [row for row in self.read() if int(row["step"]) <= step]
        self._write_atomically(rows)

    # ----------------------------------------------------------------------------- reading
    def read(self) -> list[dict[str, str]]:
        """All complete, well-formed rows as dicts of strings (see :func:`read_rows`)."""
        return read_rows(self.path).rows

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
        replace_text(self.path, self._render(rows, header=True))

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
            with replaced(self.path, "wb") as handle:
                handle.write(data[: data.rfind(b"\n") + 1])
