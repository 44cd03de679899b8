"""Crash-safe file writes: replaced whole or not at all, appends on the disk, failures named.

Every file of the run record is written through these. A replaced file is written to
``.<name>.tmp`` beside it, flushed to the disk and moved over the old one in one step, so a
crash or a full disk mid-write leaves the old file intact. An append is flushed to the disk
before it returns. A write that fails raises an :class:`OSError` whose ``filename`` is the
file being written (a failed ``write`` on an open file names none by itself), so the run can
stop with one line that says which file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def named_failures(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an :class:`OSError` without a file name as one naming ``path``."""
    try:
        yield
    except OSError as error:
        if error.filename:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


@contextlib.contextmanager
def replaced(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Write a new version of ``path`` through the handle given; it replaces the file at exit.

    Args:
        path: The file to replace (its folder must exist).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).

    Yields:
        The handle of the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with named_failures(path):
            newline = "" if "b" not in mode else None
            with tmp.open(mode, newline=newline) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def replace_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`replaced`)."""
    with replaced(path) as handle:
        handle.write(text)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` in one write, then flush it to the disk."""
    with named_failures(path), Path(path).open("a", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
