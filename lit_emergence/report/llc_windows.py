"""The report's LLC through emergence: each collision head's LLC over its emergence window.

The paper reads a head's LLC during its first phase by height: a plateau, then a rise to its
final value. This table (``llc_windows.csv`` / ``.md``) and the figure drawn from the same
windows say what a run's LLC history can tell about that, head by head: for every head that
ended partial or true, its estimates with their verdicts, how many fall while it emerges
(from the detector's ``onset`` to its ``true`` event) and in its first phase by height (from
``phase`` to ``phase_end``, or to the end of training), and the trend of the first phase's
estimates.

Only an estimate whose verdict is ``ok`` or ``not-converged`` *measures* an LLC here: a
``not-at-minimum`` estimate (below zero by more than two standard errors) says the chains
found lower loss than the checkpoint's weights, so at that step there is no minimum and no
LLC; a ``localisation-dominated`` one is the localisation's value; a ``diverged`` one is
none. Histories written before the ``not-at-minimum`` verdict existed are judged again from
each row's mean and spread, by the same rule.

The trend is the slope of the measured estimates on ``log10`` of the time axis (weighted
least squares, weights from their standard errors, error scaled up by the scatter when it
exceeds them): ``flat`` within two standard errors of zero, else ``rising`` or ``falling``;
with fewer than :data:`MIN_TREND_POINTS` measured estimates in the first phase the answer is
``unresolved`` and says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_emergence.dynamics import TimeAxis
from lit_emergence.llc.diagnostics import below_zero
from lit_emergence.records.run import History, Run
from lit_emergence.records.schema import head_label, llc_component
from lit_emergence.report.events import Phase, RunEvents, event_time
from lit_emergence.report.heads import HeadSummary
from lit_emergence.report.tables import markdown_table, number, plus_minus

__all__ = [
    "LLC_WINDOW_COLUMNS",
    "MEASURED_VERDICTS",
    "MIN_TREND_POINTS",
    "HeadLLCWindow",
    "Trend",
    "head_windows",
    "judged_verdicts",
    "llc_window_records",
    "llc_windows_markdown",
    "standard_errors",
    "trend",
]

#: Verdicts whose estimate measures the model's LLC (the others: no minimum, the
#: localisation's value, or no estimate).
MEASURED_VERDICTS: tuple[str, ...] = ("ok", "not-converged")
#: Measured estimates a first phase needs for a trend.
MIN_TREND_POINTS = 3

#: Columns of the report's ``llc_windows.csv``.
LLC_WINDOW_COLUMNS: tuple[str, ...] = (
    "run",
    "layer",
    "head",
    "head_class",
    "onset_step",
    "true_step",
    "phase_start_step",
    "phase_end_step",
    "estimates",
    "emerging_estimates",
    "emerging_not_at_minimum",
    "first_phase_estimates",
    "first_phase_not_at_minimum",
    "first_phase_measured",
    "first_phase_median",
    "trend_per_decade",
    "trend_error",
    "first_phase_trend",
    "final_step",
    "final_llc",
    "final_llc_error",
    "final_verdict",
)


def standard_errors(llc: History) -> np.ndarray:
    """Each row's standard error of the chain mean: ``llc_std / sqrt(num_chains)`` (else NaN)."""
    rows = len(llc)
    std = llc.floats("llc_std") if "llc_std" in llc.columns else np.full(rows, np.nan)
    chains = llc.floats("num_chains") if "num_chains" in llc.columns else np.full(rows, np.nan)
    with np.errstate(invalid="ignore"):
        return np.where(chains >= 1, std / np.sqrt(np.where(chains >= 1, chains, 1.0)), np.nan)


def judged_verdicts(llc: History, sem: np.ndarray | None = None) -> np.ndarray:
    """Each row's verdict, ``not-at-minimum`` wherever the estimate is below zero by 2 SE.

    Rows written before that verdict existed say ``ok`` (or another verdict) for such an
    estimate; ``diverged`` is kept (it takes precedence, as in the estimator). ``sem``: the
    rows' :func:`standard_errors`, when the caller has them already.
    """
    written = llc.columns.get("verdict", np.full(len(llc), "", dtype=object))
    mean = llc.floats("llc_mean")
    sem = standard_errors(llc) if sem is None else sem
    judged = np.array([str(v) if v else "ok" for v in written], dtype=object)
    for index in range(len(llc)):
        if judged[index] != "diverged" and below_zero(float(mean[index]), float(sem[index])):
            judged[index] = "not-at-minimum"
    return judged


@dataclass(frozen=True)
class Trend:
    """The slope of the LLC on ``log10`` time over a window.

    Attributes:
        slope: Change of the LLC per decade of time.
        error: Its standard error.
        points: Estimates it was fitted to.
        answer: ``flat``, ``rising``, ``falling`` or ``unresolved: <why>``.
    """

    slope: float
    error: float
    points: int
    answer: str


def trend(t: np.ndarray, mean: np.ndarray, sem: np.ndarray, not_measured: int = 0) -> Trend:
    """The LLC's trend over a window of measured estimates.

    Args:
        t: Times (> 0) of the measured estimates.
        mean: The estimates.
        sem: Their standard errors (NaN or 0: unweighted).
        not_measured: Estimates in the window that measure no LLC (for the answer's reason).

    Returns:
        The :class:`Trend`; ``unresolved`` with fewer than :data:`MIN_TREND_POINTS` points or
        a window of one instant.
    """
    keep = np.isfinite(t) & (t > 0) & np.isfinite(mean)
    x, y, s = np.log10(t[keep]), mean[keep], sem[keep]
    if x.size < MIN_TREND_POINTS or np.ptp(x) == 0:
        why = f"{x.size} measured estimate(s)"
        if not_measured:
            why += f", {not_measured} not at a minimum or not an LLC"
        return Trend(math.nan, math.nan, int(x.size), f"unresolved: {why}")
    weighted = np.all(np.isfinite(s) & (s > 0))
    w = 1.0 / s**2 if weighted else np.ones_like(y)
    design = np.stack([np.ones_like(x), x], axis=1)
    normal = design.T @ (design * w[:, None])
    coefficients = np.linalg.solve(normal, design.T @ (w * y))
    covariance = np.linalg.inv(normal)
    residuals = y - design @ coefficients
    dof = x.size - 2
    scatter = float(np.sum(w * residuals**2) / dof) if dof > 0 else math.inf
    # Unweighted: the residual variance is the noise; weighted: only inflate, never shrink.
    scale = scatter if not weighted else max(1.0, scatter)
    slope, error = float(coefficients[1]), float(math.sqrt(covariance[1, 1] * scale))
    if not math.isfinite(error):
        answer = "unresolved: no error on the slope"
    elif abs(slope) <= 2 * error:
        answer = "flat"
    else:
        answer = "rising" if slope > 0 else "falling"
    return Trend(slope, error, int(x.size), answer)


@dataclass(frozen=True)
class HeadLLCWindow:
    """One collision head's LLC history beside its emergence events.

    Attributes:
        run: Run name.
        summary: The head at the end of training.
        step: Steps of its LLC estimates (time order).
        t: Their times on the report's axis.
        mean: The estimates.
        sem: Their standard errors.
        verdicts: Their verdicts, judged again (:func:`judged_verdicts`).
        onset: ``(step, t)`` of the detector's ``onset`` event, if any.
        became_true: ``(step, t)`` of its ``true`` event, if any.
        first_phase: Its first phase by height, if any.
    """

    run: str
    summary: HeadSummary
    step: np.ndarray
    t: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    verdicts: np.ndarray
    onset: tuple[int, float] | None
    became_true: tuple[int, float] | None
    first_phase: Phase | None

    @property
    def label(self) -> str:
        """``L<layer>H<head>``."""
        return head_label(self.summary.layer, self.summary.head)

    def measured(self) -> np.ndarray:
        """Mask of the estimates that measure an LLC (:data:`MEASURED_VERDICTS`)."""
        return np.isin(self.verdicts, MEASURED_VERDICTS)

    def emerging(self) -> np.ndarray:
        """Mask of the estimates from the onset (or the first estimate) to becoming true."""
        start = self.onset[0] if self.onset is not None else -math.inf
        end = self.became_true[0] if self.became_true is not None else math.inf
        return (self.step >= start) & (self.step <= end)

    def in_first_phase(self) -> np.ndarray:
        """Mask of the estimates in the first phase by height (none without one)."""
        phase = self.first_phase
        if phase is None:
            return np.zeros(self.step.shape, dtype=bool)
        end = phase.end_step if phase.end_step is not None else math.inf
        return (self.step >= phase.start_step) & (self.step < end)

    def first_phase_trend(self) -> Trend:
        """The trend of the measured estimates in the first phase."""
        if self.first_phase is None:
            return Trend(math.nan, math.nan, 0, "unresolved: no first phase by height")
        window, measured = self.in_first_phase(), self.measured()
        keep = window & measured
        return trend(self.t[keep], self.mean[keep], self.sem[keep], int(np.sum(window & ~measured)))


def _event(
    events: RunEvents | None, layer: int, head: int, name: str, time_axis: TimeAxis
) -> tuple[int, float] | None:
    """``(step, time on the axis)`` of a head's event, ``None`` if it has none."""
    for event in events.events if events is not None else ():
        if (event.layer, event.head, event.event) == (layer, head, name):
            return int(event.event_step), event_time(event, time_axis)
    return None


def head_windows(
    run: Run, summaries: Sequence[HeadSummary], events: RunEvents | None
) -> list[HeadLLCWindow]:
    """The LLC windows of a run's partial and true heads that have per-head LLC estimates.

    Args:
        run: The run, on the report's time axis (its LLC history's ``t``).
        summaries: Its heads at the end of training.
        events: Its emergence events (``None``: no onset, true or phase marks).

    Returns:
        One window per partial or true head with at least one per-head LLC estimate, true
        heads first, then by final score.
    """
    llc = run.histories.get("llc")
    if llc is None or not len(llc):
        return []
    sem = standard_errors(llc)
    verdicts = judged_verdicts(llc, sem)
    windows = []
    collision = [s for s in summaries if s.head_class in ("true", "partial")]
    collision.sort(key=lambda s: (s.head_class != "true", -s.score))
    time_axis = llc.axis
    for summary in collision:
        mask = llc.columns["component"] == llc_component(summary.layer, summary.head)
        if not np.any(mask):
            continue
        rows = llc.where(mask)
        steps = rows.floats("step")
        order = np.argsort(steps, kind="stable")
        phases = events.phases(summary.layer, summary.head, time_axis) if events else []
        windows.append(
            HeadLLCWindow(
                run=run.name,
                summary=summary,
                step=steps[order].astype(int),
                t=rows.t[order],
                mean=rows.floats("llc_mean")[order],
                sem=sem[mask][order],
                verdicts=verdicts[mask][order],
                onset=_event(events, summary.layer, summary.head, "onset", time_axis),
                became_true=_event(events, summary.layer, summary.head, "true", time_axis),
                first_phase=phases[0] if phases else None,
            )
        )
    return windows


def llc_window_records(windows: Iterable[HeadLLCWindow]) -> list[dict[str, Any]]:
    """Rows of ``llc_windows.csv``, one per window."""
    rows = []
    for window in windows:
        summary, phase = window.summary, window.first_phase
        emerging, in_phase = window.emerging(), window.in_first_phase()
        not_at_minimum = window.verdicts == "not-at-minimum"
        measured_in_phase = in_phase & window.measured()
        phase_trend = window.first_phase_trend()
        last = int(np.argmax(window.step)) if window.step.size else None
        rows.append(
            {
                "run": window.run,
                "layer": summary.layer,
                "head": summary.head,
                "head_class": summary.head_class,
                "onset_step": window.onset[0] if window.onset else "",
                "true_step": window.became_true[0] if window.became_true else "",
                "phase_start_step": phase.start_step if phase else "",
                "phase_end_step": phase.end_step if phase and phase.end_step is not None else "",
                "estimates": int(window.step.size),
                "emerging_estimates": int(np.sum(emerging)),
                "emerging_not_at_minimum": int(np.sum(emerging & not_at_minimum)),
                "first_phase_estimates": int(np.sum(in_phase)),
                "first_phase_not_at_minimum": int(np.sum(in_phase & not_at_minimum)),
                "first_phase_measured": int(np.sum(measured_in_phase)),
                "first_phase_median": (
                    float(np.median(window.mean[measured_in_phase]))
                    if np.any(measured_in_phase)
                    else math.nan
                ),
                "trend_per_decade": phase_trend.slope,
                "trend_error": phase_trend.error,
                "first_phase_trend": phase_trend.answer,
                "final_step": int(window.step[last]) if last is not None else "",
                "final_llc": float(window.mean[last]) if last is not None else math.nan,
                "final_llc_error": float(window.sem[last]) if last is not None else math.nan,
                "final_verdict": str(window.verdicts[last]) if last is not None else "",
            }
        )
    return rows


def llc_windows_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Compact Markdown view of ``llc_windows.csv``."""
    header = [
        "run",
        "head",
        "class",
        "onset → true (step)",
        "first phase (steps)",
        "emerging: not at a minimum",
        "first phase: not at a minimum / measured",
        "first phase: median",
        "trend per decade",
        "final LLC",
    ]
    body = []
    for r in records:
        end = r["phase_end_step"] if r["phase_end_step"] != "" else "end"
        phase = f"{r['phase_start_step']}–{end}" if r["phase_start_step"] != "" else "—"
        trend_text = r["first_phase_trend"]
        if trend_text in ("flat", "rising", "falling"):
            trend_text = f"{trend_text}: {plus_minus(r['trend_per_decade'], r['trend_error'])}"
        body.append(
            [
                str(r["run"]),
                head_label(int(r["layer"]), int(r["head"])),
                str(r["head_class"]),
                f"{r['onset_step'] or '—'} → {r['true_step'] or '—'}",
                phase,
                f"{r['emerging_not_at_minimum']} of {r['emerging_estimates']}",
                f"{r['first_phase_not_at_minimum']} / {r['first_phase_measured']} of "
                f"{r['first_phase_estimates']}",
                number(r["first_phase_median"]),
                trend_text,
                f"{plus_minus(r['final_llc'], r['final_llc_error'])} at {r['final_step']} "
                f"({r['final_verdict']})",
            ]
        )
    return markdown_table(header, body)
