"""Writing the report's tables: full-precision CSV for machines, compact Markdown for people.

* ``heads.csv`` / ``heads.md`` — every head of every run at the end of training: final scores
  (raw and above the uniform-attention level), class, attention-distance correlation and LLC;
* ``events.csv`` / ``events.md`` — the emergence events of every head (onset, power law,
  partial, true), recorded by the run's detector or replayed from its histories;
* ``exponents.csv`` / ``exponents.md`` — per head, run and observable: the window, exponent
  with its error, effective-potential degree, Lojasiewicz exponent, the AICc comparison and
  the broken power law (columns: :data:`lit_emergence.report.fits.EXPONENT_COLUMNS`), or
  why a fit was not possible.

Heads and exponents list the true heads first, then the partial ones, then the rest (each
group in run, block and head order); the Markdown exponent table prints no exponent for a head
whose score never moved, only the mark (the CSV keeps the numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_emergence.records.errors import Problem
from lit_emergence.records.schema import OBSERVABLE_BY_NAME, head_label
from lit_emergence.report.events import EVENT_TABLE_COLUMNS
from lit_emergence.report.fits import EXPONENT_COLUMNS
from lit_emergence.report.heads import HeadSummary, class_rank

HEAD_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HeadSummary))


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(path: Path, columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records as CSV (NaN as an empty cell, floats at full precision).

    Args:
        path: Output file.
        columns: Column order (every record must have exactly these keys or fewer).
        records: Rows.

    Returns:
        ``path``.
    """
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({key: _csv_value(value) for key, value in record.items()})
    return path


def number(value: Any, digits: int = 3) -> str:
    """A number for a Markdown cell: ``digits`` significant digits, empty for NaN."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    value = float(value)
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def plus_minus(value: Any, error: Any) -> str:
    """``value ± error``, or just the value when the error is missing."""
    text, err = number(value), number(error, 2)
    return f"{text} ± {err}" if text and err else text


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), line(["---"] * len(header))]
    lines.extend(line(row) for row in rows)
    return "\n".join(lines) + "\n"


def strongest_first(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a ``head_class`` column, true heads first, then partial, then the rest.

    The sort is stable: within a class the rows keep their order (run, block, head).
    """
    return sorted((dict(r) for r in records), key=lambda r: class_rank(str(r["head_class"])))


def head_records(summaries: Iterable[HeadSummary]) -> list[dict[str, Any]]:
    """Rows of ``heads.csv``, true heads first (:func:`strongest_first`)."""
    return strongest_first(dataclasses.asdict(summary) for summary in summaries)


def heads_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Compact Markdown view of ``heads.csv``."""
    header = [
        "run",
        "head",
        "class",
        "score",
        "above uniform",
        "strict",
        "impact",
        OBSERVABLE_BY_NAME["query_spearman"].label,
        OBSERVABLE_BY_NAME["g_contact"].label,
        "LLC",
        "step",
    ]
    rows = [
        [
            r["run"],
            head_label(r["layer"], r["head"]),
            f"**{r['head_class']}**" if r["head_class"] == "true" else r["head_class"],
            number(r["score"]),
            number(r["score_above_uniform"]),
            number(r["strict"]),
            number(r["impact"]),
            number(r["query_spearman"]),
            number(r["g_contact"]),
            plus_minus(r["llc"], r["llc_std"]),
            str(r["step"]) if r["step"] >= 0 else "",
        ]
        for r in records
    ]
    return markdown_table(header, rows)


def _window(record: Mapping[str, Any]) -> str:
    start, end = number(record["window_start"]), number(record["window_end"])
    if not start:
        return ""
    source = "" if record["window_source"] == "detected" else " (fallback)"
    return f"{start} – {end}{source}"


def _preferred(record: Mapping[str, Any]) -> str:
    model = str(record["preferred_model"]).replace("_", " ")
    delta = record["delta_aicc_power_law"]
    if model and isinstance(delta, float) and math.isfinite(delta) and delta > 0:
        return f"{model} (PL +{delta:.1f})"
    return model


def _broken(record: Mapping[str, Any]) -> str:
    first = plus_minus(record["broken_alpha1"], record["broken_alpha1_error"])
    if not first:
        return ""
    second = plus_minus(record["broken_alpha2"], record["broken_alpha2_error"])
    return f"{first} / {second} @ {number(record['t_break'])}"


#: What the Markdown exponent table prints instead of the exponents of a head whose score never
#: moved.
NEVER_MOVED = "— (score never moved)"


def _observable(record: Mapping[str, Any]) -> str:
    observable = OBSERVABLE_BY_NAME.get(str(record["observable"]))
    name = observable.label if observable is not None else str(record["observable"])
    return f"{name} ({record['kind']})"


def exponents_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Compact Markdown view of ``exponents.csv`` (full precision is in the CSV)."""
    header = [
        "run",
        "head",
        "class",
        "observable",
        "window",
        "n",
        "α ± error",
        "potential degree a",
        "Łojasiewicz ρ",
        "AICc prefers",
        "broken: α₁ / α₂ @ t_break",
        "note",
    ]
    rows = []
    for r in records:
        exponents = [
            plus_minus(r["alpha"], r["alpha_error"]),
            plus_minus(r["potential_degree"], r["potential_degree_error"]),
            plus_minus(r["lojasiewicz_exponent"], r["lojasiewicz_exponent_error"]),
            _preferred(r),
            _broken(r),
        ]
        if r.get("score_moved") is False:
            exponents = [NEVER_MOVED, "", "", "", ""]
        rows.append(
            [
                r["run"],
                head_label(r["layer"], r["head"]),
                r["head_class"],
                _observable(r),
                _window(r),
                str(r["n_points"]),
                *exponents,
                r["note"],
            ]
        )
    return markdown_table(header, rows)


def events_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Compact Markdown view of ``events.csv``."""
    header = ["run", "head", "event", "refers to step", "flagged at step", "value", "detail"]
    rows = [
        [
            r["run"],
            head_label(r["layer"], r["head"]),
            r["event"],
            str(r["event_step"]),
            str(r["step"]),
            number(r["value"]),
            r["detail"],
        ]
        for r in records
    ]
    return markdown_table(header, rows)


def problems_markdown(problems: Sequence[Problem]) -> str:
    """The things that could not be computed, as a Markdown table."""
    return markdown_table(
        ["run", "what", "why"], [[p.run or "(all runs)", p.item, p.reason] for p in problems]
    )


def write_tables(
    out_dir: Path,
    head_rows: Sequence[Mapping[str, Any]],
    exponent_rows: Sequence[Mapping[str, Any]],
    event_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Path]:
    """Write ``heads``, ``exponents`` and ``events`` as CSV and Markdown into ``out_dir``.

    Returns:
        Name -> path of every file written.
    """
    tables = (
        ("heads", HEAD_COLUMNS, head_rows, heads_markdown),
        ("exponents", EXPONENT_COLUMNS, exponent_rows, exponents_markdown),
        ("events", EVENT_TABLE_COLUMNS, event_rows, events_markdown),
    )
    written: dict[str, Path] = {}
    for name, columns, rows, _ in tables:
        written[f"{name}.csv"] = write_csv(out_dir / f"{name}.csv", columns, rows)
    for name, _, rows, markdown in tables:
        path = written[f"{name}.md"] = out_dir / f"{name}.md"
        path.write_text(markdown(rows))
    return written
