"""What the report tests share: histories and head summaries made in memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lit_emergence.records.run import History
from lit_emergence.report.heads import HeadSummary


def history(name: str, rows: list[dict[str, float | int | str]]) -> History:
    """A history made in memory, as ``History.read`` makes it from a CSV file."""
    columns = {key: np.array([str(row[key]) for row in rows], dtype=object) for key in rows[0]}
    return History(name, Path(f"{name}.csv"), columns)


def summary_of(score: float, head_class: str = "true", layer: int = 0, head: int = 0):
    """A head's final values with only the score and class known."""
    nan = float("nan")
    known = {"run": "synthetic", "layer": layer, "head": head, "step": 10_000}
    known |= {"score": score, "head_class": head_class}
    fields = {f.name: nan for f in dataclasses.fields(HeadSummary)}
    return HeadSummary(**(fields | known))
