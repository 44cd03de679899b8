"""What can go wrong reading run records.

A path that is no run, a named history no run has, an item that cannot be made.
"""

from __future__ import annotations

from dataclasses import dataclass


class NotARunError(ValueError):
    """A path that is not a usable run directory (missing, not a directory, no histories)."""


class MissingHistoryError(ValueError):
    """A history file the caller named (e.g. an LLC history) that no run holds in usable form."""


class Unavailable(Exception):  # noqa: N818 (a condition reported to the reader, not a bug)
    """A figure, fit or table entry that cannot be computed from what a run holds.

    The message says why, in words meant for the report's reader (e.g. "no checkpoint").
    """


@dataclass(frozen=True)
class Problem:
    """One thing the report could not compute, and why.

    Attributes:
        run: Run name, or ``""`` for items that span runs.
        item: What was not computed (e.g. ``"Figure 3"``, ``"fit L1H6 g_contact"``).
        reason: Why, in one line.
    """

    run: str
    item: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.run}: " if self.run else ""
        return f"{where}{self.item}: {self.reason}"
