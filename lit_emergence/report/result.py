"""What ``lit-emergence report`` wrote: :class:`ReportResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_emergence.records.errors import Problem
from lit_emergence.report.alignment import Alignment

__all__ = ["ReportResult"]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out_dir: The report directory.
        runs: Names of the runs reported on.
        files: File name (relative to ``out_dir``) -> path, for every file written.
        figures: ``(title, path)`` of every figure, in reading order.
        tables: Table name (``"heads"``, ``"exponents"``, ``"events"``, ``"phases"``,
            ``"llc_windows"``, and with several aligned runs ``"alignment"`` and
            ``"alignment_summary"``) -> its rows.
        columns: Table name -> its column order (as in the CSV files).
        problems: What could not be computed, and why (skipped runs included).
        skipped: Paths that were not usable runs, with the reason.
        alignment: The heads of several runs lined up with the first run's, or ``None``
            (one run, ``checkpoint=False``, or fewer than two alignable runs).
        captions: Figure title -> its caption (Figures 1 to 3, the LLC through emergence).
    """

    out_dir: Path
    runs: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    alignment: Alignment | None = None
    captions: dict[str, str] = field(default_factory=dict)
