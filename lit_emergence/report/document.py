"""``report.md``: every figure and table of a report in one Markdown page, and what is missing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_emergence.dynamics import TimeAxis
from lit_emergence.records.errors import Problem
from lit_emergence.report.figures import TIME_LABELS
from lit_emergence.report.fits import AICC_TIE, MIN_DECAY_FACTOR
from lit_emergence.report.llc_windows import MIN_TREND_POINTS, llc_windows_markdown
from lit_emergence.report.phases import phases_markdown
from lit_emergence.report.tables import (
    events_markdown,
    exponents_markdown,
    heads_markdown,
    markdown_table,
    problems_markdown,
)

DEFINITIONS = """\
* **Time axis**: {time_label}. Measurements at t = 0 are left out of log axes and fits.
  Figure 1 also shows the optimizer step on its top axis (gradient-flow time only) and starts
  half a decade before the first measurement at which any of its curves had moved.
* **Collision-detection score**: mean attention mass a query puts on the discs within
  (1 + tolerance) contact distances; heads are *true* at or above {true:g}, *partial* at or
  above {partial:g}, else *none* (the run's thresholds; final values in the heads table).
  *Above uniform*: `(score − u) / (1 − u)`, with `u` the score of uniform attention on the
  run's probe set: 0 for uniform attention, 1 for a perfect collision head.
* **Attention-distance correlation**: the per-query Spearman correlation of attention with
  distance, averaged over queries (`query_spearman`), a measurement that is not a function of
  the score. `G(contact)` (`g_contact`), the connected correlation at contact distance, is an
  affine function of the score on a fixed probe set: where it is shown it says "(affine in the
  score)", and its fits are fits of the score.
* **Fitted observables**: the score's rise as a *growth*, `O(t) − O(t0) = C t^α`; the
  attention-distance correlation approaching its final value as a *decay*,
  `|O(t) − O∞| = C t^−α`. Only a decay exponent reads as an effective potential
  `V ~ |x|^a`, `a = 2 + 1/α`, with Łojasiewicz exponent `ρ = (1 + α)/(1 + 2α)`, and only for a
  fit that decays (α > 0, `|O − O∞|` shrinking at least {decay:g}-fold over the window).
  Fits of a head whose score never moved (the detector flagged no onset, power law, partial or
  true event) describe noise: the exponent table prints no exponent for them, only the mark.
* **Window**: detected (longest stretch with a stable local exponent) where possible, else a
  stated fallback split at the first point past half of the total change: a growth is fitted
  from the start up to it, a decay from it to the end.
* **Errors**: the larger of a moving-block bootstrap and a delete-a-block jackknife
  ({bootstrap} bootstrap replicates; 0 means Jacobian errors).
* **Model comparison**: power law, broken power law, exponential and logistic (in log t) by
  AICc on the same window; a power law within {tie:g} AICc units of the best counts as tied.
* **Phases by height**: the score per band of query height (band 0 at the floor); the
  detector's `phase` event marks the first phase (the low bands true, the high ones not),
  `phase_end` its end (value 1: every band true, the second phase).
"""


def _image(title: str, path: Path, out_dir: Path, caption: str = "") -> str:
    text = f"### {title}\n\n![{title}]({path.relative_to(out_dir).as_posix()})\n"
    return f"{text}\n*{caption}*\n" if caption else text


def write_document(
    out_dir: Path,
    *,
    runs: Sequence[Mapping[str, Any]],
    figures: Sequence[tuple[str, Path]],
    captions: Mapping[str, str] | None = None,
    head_rows: Sequence[Mapping[str, Any]],
    exponent_rows: Sequence[Mapping[str, Any]],
    event_rows: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
    phase_rows: Sequence[Mapping[str, Any]] = (),
    llc_window_rows: Sequence[Mapping[str, Any]] = (),
    time_axis: TimeAxis,
    thresholds: tuple[float, float],
    n_bootstrap: int,
    alignment: str,
) -> Path:
    """Write ``report.md`` into ``out_dir``.

    Args:
        out_dir: The report directory (figures are linked relative to it).
        runs: One row per run: ``run``, ``path``, ``last_step``, ``heads``, ``true``,
            ``partial``, ``checkpoint``.
        figures: ``(title, path)`` of every figure written, in reading order.
        captions: Figure title -> its caption, printed under the figure.
        head_rows: Rows of ``heads.csv``.
        exponent_rows: Rows of ``exponents.csv``.
        event_rows: Rows of ``events.csv``.
        phase_rows: Rows of ``phases.csv``.
        llc_window_rows: Rows of ``llc_windows.csv``.
        problems: What could not be computed, and why.
        time_axis: The time axis used.
        thresholds: ``(true, partial)`` thresholds (of the first run).
        n_bootstrap: Bootstrap replicates used.
        alignment: Body of the cross-run head alignment section (Markdown): the aligned heads
            and their summary, or why there are none.

    Returns:
        The path of ``report.md``.
    """
    parts = ["# Emergence report\n"]
    parts.append(
        markdown_table(
            ["run", "directory", "last step", "heads", "true", "partial", "checkpoint"],
            [
                [
                    r["run"],
                    f"`{r['path']}`",
                    str(r["last_step"]),
                    str(r["heads"]),
                    str(r["true"]),
                    str(r["partial"]),
                    r["checkpoint"],
                ]
                for r in runs
            ],
        )
    )
    parts.append("## Definitions\n")
    parts.append(
        DEFINITIONS.format(
            time_label=TIME_LABELS[time_axis],
            true=thresholds[0],
            partial=thresholds[1],
            bootstrap=n_bootstrap,
            tie=AICC_TIE,
            decay=MIN_DECAY_FACTOR,
        )
    )
    parts.append("## Figures\n")
    captions = captions or {}
    parts.extend(_image(title, path, out_dir, captions.get(title, "")) for title, path in figures)
    if not figures:
        parts.append("No figure could be drawn (see below).\n")
    parts.append("## Heads at the end of training\n\n(`heads.csv` has full precision.)\n")
    parts.append(heads_markdown(head_rows) if head_rows else "No head was measured.\n")
    parts.append("## Exponents\n\n(`exponents.csv` has full precision and every column.)\n")
    parts.append(exponents_markdown(exponent_rows) if exponent_rows else "No fit was made.\n")
    parts.append(
        "## Phases by height\n\n(Each collision head: its first phase, from the detector's "
        "`phase` event (true in the lowest band of query height, not in the highest) to "
        "`phase_end` (true in every band), and the fit of its attention-distance approach; "
        "`phases.csv` has full precision.)\n"
    )
    parts.append(phases_markdown(phase_rows) if phase_rows else "No collision head.\n")
    parts.append(
        "## LLC through emergence\n\n(Each collision head's per-head LLC estimates: how many "
        "fall while it emerges (detector's onset to true) and in its first phase by height, how "
        "many of them are below zero by two standard errors (no minimum there), and the trend "
        "of the measured ones (verdict ok or not-converged) per decade of time, flat within two "
        f"standard errors; unresolved with fewer than {MIN_TREND_POINTS}. "
        "`llc_windows.csv` has full precision.)\n"
    )
    parts.append(
        llc_windows_markdown(llc_window_rows)
        if llc_window_rows
        else "No collision head has per-head LLC estimates.\n"
    )
    parts.append(
        "## Emergence events\n\n(Recorded by the run's `EmergenceDetector`, or the same detector "
        "replayed over its histories; the `source` column of `events.csv` says which. Figure 1 "
        "marks them as purple lines.)\n"
    )
    parts.append(events_markdown(event_rows) if event_rows else "No event was detected.\n")
    parts.append("## Cross-run head alignment\n")
    parts.append(alignment)
    parts.append("## Not computed\n")
    parts.append(problems_markdown(problems) if problems else "Everything was computed.\n")
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
