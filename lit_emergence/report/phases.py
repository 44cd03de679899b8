"""The report's ``phases`` table: each collision head's phases by height beside its approach fit.

One row per head that ended partial or true, or that the detector saw in a phase by height:
its final score and band scores, when its first phase by height began (the detector's
``phase`` event: true in the lowest band, not in the highest) and ended (``phase_end``: true
in every band), how many decades of the report's time axis the first phase lasted (to the last
measurement when it never ended), and the fit of the approach of the report's
attention-distance observable (window, single exponent, AICc's choice, the broken power law).
It is the table the paper's two questions about a head's dynamics read from: does it detect
collisions low in the box first, and does its approach show one power law or two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lit_emergence.dynamics import TimeAxis
from lit_emergence.records.run import Run
from lit_emergence.records.schema import band_columns, head_label
from lit_emergence.report.events import RunEvents
from lit_emergence.report.heads import HeadSummary
from lit_emergence.report.tables import markdown_table, number, plus_minus

__all__ = ["PHASE_COLUMNS", "phase_records", "phases_markdown"]

# The columns of the approach fit, as ``exponents.csv`` names them.
_FIT_COLUMNS = (
    "window_start",
    "window_end",
    "window_decades",
    "alpha",
    "alpha_error",
    "preferred_model",
    "broken_alpha1",
    "broken_alpha2",
    "t_break",
)
#: Columns of the report's ``phases.csv``.
PHASE_COLUMNS: tuple[str, ...] = (
    "run",
    "layer",
    "head",
    "head_class",
    "score",
    "final_band_scores",
    "phase_start_step",
    "phase_start",
    "phase_height",
    "phase_end_step",
    "phase_end",
    "first_phase_decades",
    "first_phase_to_end",
    "observable",
    *_FIT_COLUMNS,
)


def _final_bands(run: Run, layer: int, head: int) -> str:
    """The head's last band scores, floor first, space-separated (empty without bands)."""
    collision = run.histories.get("collision")
    if collision is None:
        return ""
    mine = collision.for_head(layer, head)
    columns = band_columns(mine.columns)
    if not len(mine) or not columns:
        return ""
    return " ".join(f"{float(mine.floats(column)[-1]):.3f}" for column in columns)


def phase_records(
    run: Run,
    summaries: Sequence[HeadSummary],
    events: RunEvents | None,
    fit_records: Mapping[tuple[int, int, str], Mapping[str, Any]],
    observable: str,
    time_axis: TimeAxis,
) -> list[dict[str, Any]]:
    """Rows of ``phases.csv`` for one run.

    Args:
        run: The run.
        summaries: Its heads at the end of training.
        events: Its emergence events (``None``: no phase columns).
        fit_records: The report's fits as ``exponents.csv`` rows, by ``(layer, head,
            observable name)``.
        observable: The observable whose approach fit the table shows.
        time_axis: The report's time axis (of the phase times and durations).

    Returns:
        One row per partial or true head, or head with a phase by height, in head order.
    """
    rows = []
    for summary in summaries:
        layer, head = summary.layer, summary.head
        phases = events.phases(layer, head, time_axis) if events is not None else []
        if summary.head_class not in ("true", "partial") and not phases:
            continue
        row: dict[str, Any] = {
            "run": run.name,
            "layer": layer,
            "head": head,
            "head_class": summary.head_class,
            "score": summary.score,
            "final_band_scores": _final_bands(run, layer, head),
            "observable": observable,
        }
        if phases:
            first = phases[0]
            last = _last_time(run, time_axis)
            end = first.end if math.isfinite(first.end) else last
            row |= {
                "phase_start_step": first.start_step,
                "phase_start": first.start,
                "phase_height": first.height,
                "phase_end_step": first.end_step if first.end_step is not None else "",
                "phase_end": first.end if math.isfinite(first.end) else math.nan,
                "first_phase_decades": (
                    math.log10(end / first.start) if first.start > 0 and end > 0 else math.nan
                ),
                "first_phase_to_end": first.end_step is None,
            }
        record = fit_records.get((layer, head, observable))
        if record is not None:
            row |= {column: record[column] for column in _FIT_COLUMNS}
        rows.append({column: row.get(column, "") for column in PHASE_COLUMNS})
    return rows


def _last_time(run: Run, time_axis: TimeAxis) -> float:
    collision = run.histories.get("collision")
    if collision is None or not len(collision):
        return math.nan
    return float(collision.time(time_axis)[-1])


def phases_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Compact Markdown view of ``phases.csv``."""
    header = [
        "run",
        "head",
        "class",
        "score",
        "bands (floor → top)",
        "first phase from",
        "true up to",
        "until",
        "decades",
        "approach window (t)",
        "α",
        "AICc prefers",
        "broken: α₁ / α₂ @ t_break",
    ]
    rows = []
    for r in records:
        started = r["phase_start_step"] != ""
        until = (
            ("the end" if r["first_phase_to_end"] else f"step {r['phase_end_step']}")
            if started
            else ""
        )
        window = (
            f"{number(r['window_start'], 2)}–{number(r['window_end'], 2)} "
            f"({number(r['window_decades'], 2)} dec.)"
            if r["window_start"] != ""
            else ""
        )
        broken = (
            f"{number(r['broken_alpha1'], 2)} / {number(r['broken_alpha2'], 2)} "
            f"@ {number(r['t_break'], 2)}"
            if r["broken_alpha1"] != "" and not _nan(r["broken_alpha1"])
            else ""
        )
        rows.append(
            [
                r["run"],
                head_label(r["layer"], r["head"]),
                r["head_class"],
                number(r["score"]),
                r["final_band_scores"],
                f"step {r['phase_start_step']} (t {number(r['phase_start'], 2)})"
                if started
                else "",
                f"{number(r['phase_height'], 2)} of the box" if started else "",
                until,
                number(r["first_phase_decades"], 2) if started else "",
                window,
                plus_minus(r["alpha"], r["alpha_error"]) if r["alpha"] != "" else "",
                str(r["preferred_model"]).replace("_", " "),
                broken,
            ]
        )
    return markdown_table(header, rows)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
