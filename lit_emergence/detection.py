"""Early detection of emerging collision heads from their measurement histories.

Model-free and causal: every decision about a head at a measurement uses that head's
measurements up to and including it, nothing later. The same :class:`EmergenceTracker` runs
live inside :class:`~lit_emergence.callbacks.EmergenceDetector` (fed the new history rows as
they are written) and as a replay over finished histories (:func:`detect_events`); since each
head's decisions depend only on the order of its own rows, the two give identical events.

Events, each fired at most once per head (``docs/detection.md`` has the reasoning):

* ``onset`` — the collision score has left its initial level: ``persistence`` consecutive
  measurements at or above ``baseline + max(onset_fraction * (partial_threshold - baseline),
  noise_z * noise)``. ``baseline`` is the median of the first ``baseline_points``
  scores (the untrained model); ``noise`` is a robust scale of the measurement-to-measurement
  fluctuations seen so far (the median absolute deviation of successive differences, as a
  standard deviation of one measurement). The first term is a minimum effect size (slow
  drifts of heads that never specialise stay below it), the second rejects noise.
* ``power_law`` — the departure of the head's observable from its initial level,
  ``D(t) = sign * (O(t) - baseline)`` (score: sign +1; attention-distance ``pearson``: sign -1,
  local heads have negative correlation), is at least ``power_law_min_departure`` at the
  latest measurement and has followed one power law of time, ``D ~ t^p`` with ``p`` > 0
  and significant (3 standard errors), over a trailing window ending at the latest
  measurement that spans at least ``power_law_min_decades`` decades of time and
  ``power_law_min_points`` measurements, each with a departure above ``noise_z`` noise, with
  a root-mean-square log-residual of at most ``power_law_max_scatter``. The window is the
  longest such trailing window; the event's ``event_step`` is its first measurement (where
  the regime began).
* ``partial`` / ``true`` — the score is at or above ``partial_threshold`` /
  ``true_threshold`` for ``persistence`` consecutive measurements (a single noisy crossing
  does not count).
* ``phase`` — the head detects collisions low in the box but not high up (the paper's first
  phase), from the ``score_band<k>`` columns (score per band of query height, band 0 at the
  floor): for ``persistence`` consecutive measurements the lowest band with a score is at or
  above ``true_threshold`` and the highest band with a score is below it. ``value`` is the
  height, as a fraction of the box height, below which the head is true (the lower edge of the
  first band with a score below the threshold).
* ``phase_end`` — after a ``phase``, the condition has failed for ``persistence`` consecutive
  measurements: the high bands became true too (the second phase: ``value`` 1) or the low
  bands fell below the threshold (``value`` as for ``phase``).

Two steps belong to each event: ``step``, the measurement at which the evidence was complete
(when a live detector knows), and ``event_step``, the step the event refers to (for
``onset``, ``partial``, ``true``, ``phase`` and ``phase_end`` the first measurement of the
persistent run, for ``power_law`` the start of the window). The lead time of a head that
became a true collision head (:func:`lead_times`) is ``event_step`` of its ``true`` event (when
it reached the threshold) minus ``step`` of its earliest warning (when it was flagged): how
many steps of warning the detector gave.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lit_emergence.records.csv import read_rows
from lit_emergence.records.schema import EVENTS as EVENTS_HISTORY
from lit_emergence.records.schema import (
    OBSERVABLE_BY_NAME,
    TIME_COLUMNS,
    TimeAxis,
    band_columns,
    head_label,
)

__all__ = [
    "EVENTS",
    "EVENT_COLUMNS",
    "WARNING_EVENTS",
    "DetectionSettings",
    "EmergenceEvent",
    "EmergenceTracker",
    "LeadTime",
    "detect_events",
    "lead_times",
    "read_events",
]

#: Event names, in the order in which a developing head normally passes them.
EVENTS: tuple[str, ...] = ("onset", "power_law", "partial", "phase", "true", "phase_end")
#: Events that count as a warning before a head becomes a true collision head.
WARNING_EVENTS: tuple[str, ...] = ("onset", "power_law", "partial")
#: Columns of ``emergence/events.csv``.
EVENT_COLUMNS: tuple[str, ...] = EVENTS_HISTORY.columns
#: Observables the power-law test can follow (see ``lit_emergence.records.schema.OBSERVABLES``).
POWER_LAW_OBSERVABLES: tuple[str, ...] = ("score", "pearson")

Head = tuple[int, int]
# Smallest departure that makes the power-law test worth running, when not set: for the score
# the onset effect size (see DetectionSettings); for the Pearson r a tenth of its range.
_DEFAULT_PEARSON_DEPARTURE = 0.1
# A power-law exponent must exceed this many standard errors (its sign must be certain).
_EXPONENT_SIGNIFICANCE = 3.0
# Median absolute deviation -> standard deviation for Gaussian noise; successive differences of
# independent measurements have sqrt(2) times the noise of one.
_MAD_TO_SIGMA = 1.4826
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class DetectionSettings:
    """Settings of the emergence detector (defaults: ``docs/detection.md``).

    Args:
        true_threshold: Score at or above which a head is a true collision head (the
            ``CollisionDetectionMonitor`` default).
        partial_threshold: Score at or above which a head is a partial collision head.
        persistence: Consecutive measurements a condition must hold (>= 1) for ``onset``,
            ``partial`` and ``true``.
        baseline_points: Measurements whose median is a head's initial level (>= 1).
        onset_fraction: Minimum onset rise, as a fraction of the way from the baseline to
            ``partial_threshold``, in (0, 1].
        noise_z: Minimum onset rise, and minimum departure of every point of a power-law
            window, in units of the measurement noise (>= 0).
        power_law_observable: ``"score"`` (collision score) or ``"pearson"``
            (attention-distance correlation; needs the ``AttentionDistanceMonitor`` history).
        time_axis: Time of the power-law test: ``"gradient_flow"`` (the ``lr_integral``
            column, the default) or ``"step"``; ``"lr_integral"`` is accepted as an old
            spelling of ``"gradient_flow"``.
        power_law_min_decades: Shortest power-law window, in decades of time (> 0).
        power_law_min_points: Fewest measurements in a power-law window (>= 3).
        power_law_max_scatter: Largest root-mean-square residual of ``log D`` about the line
            (natural log, i.e. relative scatter), > 0.
        power_law_min_departure: Smallest departure ``D`` at the latest measurement for the
            power-law test to run (>= 0); ``None``: the onset effect size for the score,
            0.1 for the Pearson r.
    """

    true_threshold: float = 0.9
    partial_threshold: float = 0.5
    persistence: int = 2
    baseline_points: int = 3
    onset_fraction: float = 0.25
    noise_z: float = 4.0
    power_law_observable: str = "score"
    time_axis: TimeAxis = "gradient_flow"
    power_law_min_decades: float = 0.5
    power_law_min_points: int = 4
    power_law_max_scatter: float = 0.2
    power_law_min_departure: float | None = None

    def __post_init__(self) -> None:
        if self.time_axis == "lr_integral":  # the old spelling, kept for saved configs
            object.__setattr__(self, "time_axis", "gradient_flow")
        if not 0 < self.partial_threshold <= self.true_threshold <= 1:
            raise ValueError(
                "need 0 < partial_threshold <= true_threshold <= 1, got "
                f"partial_threshold={self.partial_threshold}, true_threshold={self.true_threshold}"
            )
        checks = (
            ("persistence", self.persistence >= 1, ">= 1"),
            ("baseline_points", self.baseline_points >= 1, ">= 1"),
            ("onset_fraction", 0 < self.onset_fraction <= 1, "in (0, 1]"),
            ("noise_z", self.noise_z >= 0, ">= 0"),
            ("power_law_observable", self.power_law_observable in POWER_LAW_OBSERVABLES, None),
            ("time_axis", self.time_axis in TIME_COLUMNS, None),
            ("power_law_min_decades", self.power_law_min_decades > 0, "> 0"),
            ("power_law_min_points", self.power_law_min_points >= 3, ">= 3"),
            ("power_law_max_scatter", self.power_law_max_scatter > 0, "> 0"),
            (
                "power_law_min_departure",
                self.power_law_min_departure is None or self.power_law_min_departure >= 0,
                ">= 0 or null",
            ),
        )
        choices = {
            "power_law_observable": "'score' or 'pearson'",
            "time_axis": "'gradient_flow' or 'step'",
        }
        for name, ok, requirement in checks:
            if not ok:
                need = requirement or choices[name]
                raise ValueError(f"{name} must be {need}, got {getattr(self, name)!r}")

    @property
    def power_law_source(self) -> Literal["collision", "distance"]:
        """Which history feeds the power-law test."""
        return "collision" if self.power_law_observable == "score" else "distance"


@dataclass(frozen=True)
class EmergenceEvent:
    """One detected event of one head (a row of ``emergence/events.csv``).

    Attributes:
        step: Measurement at which the evidence was complete (when a live detector flags it).
        lr_integral: Gradient-flow time at ``step``.
        layer: Layer of the head.
        head: Head index within the layer.
        event: One of :data:`EVENTS`.
        event_step: The step the event refers to (first measurement of the persistent run,
            or the start of the power-law window); ``event_step <= step``.
        event_lr_integral: Gradient-flow time at ``event_step``.
        value: The score at ``event_step`` (``onset``, ``partial``, ``true``), the fitted
            exponent ``p`` (``power_law``), or the fraction of the box height below which the
            head is true at ``event_step`` (``phase``, ``phase_end``).
        detail: A readable one-line explanation.
    """

    step: int
    lr_integral: float
    layer: int
    head: int
    event: str
    event_step: int
    event_lr_integral: float
    value: float
    detail: str

    def as_row(self) -> dict[str, Any]:
        """The event as a ``events.csv`` row."""
        return {name: getattr(self, name) for name in EVENT_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EmergenceEvent:
        """Parse a ``events.csv`` row (values may be strings)."""
        return cls(
            step=int(row["step"]),
            lr_integral=float(row["lr_integral"]),
            layer=int(row["layer"]),
            head=int(row["head"]),
            event=str(row["event"]),
            event_step=int(row["event_step"]),
            event_lr_integral=float(row["event_lr_integral"]),
            value=float(row["value"]),
            detail=str(row["detail"]),
        )

    @property
    def head_name(self) -> str:
        """``L<layer>H<head>``."""
        return head_label(self.layer, self.head)

    def sort_key(self) -> tuple[int, int, int, int]:
        """Order of events in a file: by step, head, then the order of :data:`EVENTS`."""
        return (self.step, self.layer, self.head, EVENTS.index(self.event))


# ------------------------------------------------------------------------------ one series
@dataclass
class _Series:
    """One head's measurements of one quantity, in arrival order (NaNs skipped)."""

    steps: list[int] = field(default_factory=list)
    lr_integral: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def append(self, step: int, lr_integral: float, value: float) -> None:
        self.steps.append(step)
        self.lr_integral.append(lr_integral)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)

    def baseline(self, points: int) -> float:
        """Median of the first ``points`` values (the initial level)."""
        return float(np.median(self.values[:points]))

    def noise(self) -> float:
        """Robust noise of one measurement from the successive differences so far.

        The median absolute deviation of the differences about their median ignores both a
        steady trend (it shifts every difference alike) and the few large jumps of a rise.
        """
        if len(self.values) < 3:
            return 0.0
        differences = np.diff(self.values)
        spread = np.median(np.abs(differences - np.median(differences)))
        return float(_MAD_TO_SIGMA * spread / math.sqrt(2.0))

    def persistent_run_start(self, level: float, persistence: int) -> int | None:
        """Index where the trailing run of ``persistence`` values ``>= level`` starts."""
        if len(self.values) < persistence:
            return None
        tail = self.values[len(self.values) - persistence :]
        return len(self.values) - persistence if min(tail) >= level else None


@dataclass(frozen=True)
class _PowerLawWindow:
    start: int  # index of the window's first measurement
    exponent: float
    exponent_se: float
    scatter: float
    decades: float
    points: int


def _trailing_power_law(
    time: np.ndarray, departure: np.ndarray, floor: float, settings: DetectionSettings
) -> _PowerLawWindow | None:
    """Longest trailing window over which ``log departure`` is linear in ``log time``.

    Every point of the window needs positive time and a departure above ``floor`` (> 0): a
    departure within the noise has a meaningless logarithm.
    """
    usable = (time > 0) & (departure > floor)
    first = time.size
    while first > 0 and usable[first - 1]:
        first -= 1
    last = time.size - 1
    best: _PowerLawWindow | None = None
    for start in range(last - settings.power_law_min_points + 1, first - 1, -1):
        decades = math.log10(time[last] / time[start])
        if decades < settings.power_law_min_decades:
            continue
        x = np.log(time[start:])
        y = np.log(departure[start:])
        centred = x - x.mean()
        spread = float(centred @ centred)
        exponent = float(centred @ (y - y.mean())) / spread
        residuals = y - y.mean() - exponent * centred
        points = x.size
        exponent_se = math.sqrt(float(residuals @ residuals) / (points - 2) / spread)
        scatter = math.sqrt(float(residuals @ residuals) / points)
        if (
            scatter <= settings.power_law_max_scatter
            and exponent > _EXPONENT_SIGNIFICANCE * exponent_se
        ):
            best = _PowerLawWindow(start, exponent, exponent_se, scatter, decades, points)
    return best


# ------------------------------------------------------------------------------ the tracker
@dataclass(frozen=True)
class _BandState:
    """Where a head is true by height at one measurement (from its band scores)."""

    low_only: bool  # the lowest band with a score is true, the highest is not
    true_below: float  # fraction of the box height below which every scored band is true
    summary: str  # the band scores, for the event's detail


def _band_state(row: Mapping[str, Any], true_threshold: float) -> _BandState | None:
    """The band state of a collision-history row; None without two bands that have a score."""
    columns = band_columns(row.keys())
    scores = [_to_float(row[column]) for column in columns]
    scored = [k for k, score in enumerate(scores) if math.isfinite(score)]
    if len(scored) < 2:
        return None
    is_true = {k: scores[k] >= true_threshold for k in scored}
    first_false = next((k for k in scored if not is_true[k]), len(scores))
    summary = ", ".join("-" if not math.isfinite(v) else f"{v:.3f}" for v in scores)
    return _BandState(
        low_only=is_true[scored[0]] and not is_true[scored[-1]],
        true_below=first_false / len(scores),
        summary=f"band scores {summary} (band 0 at the floor)",
    )


def _to_float(value: Any) -> float:
    return math.nan if value in ("", None) else float(value)


@dataclass
class _HeadState:
    score: _Series = field(default_factory=_Series)
    observable: _Series = field(default_factory=_Series)
    # 1 while the head is true in its low bands only, else 0; and the state behind each value
    phase: _Series = field(default_factory=_Series)
    bands: list[_BandState] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)


class EmergenceTracker:
    """Online, causal detection of emergence events over every head's history.

    Feed it the rows of the collision-score history (and, for the ``pearson`` power-law
    observable, of the attention-distance history) in file order, in any chunks; each call
    returns the events the new rows completed. Rows are mappings with ``step``,
    ``lr_integral``, ``layer``, ``head`` and ``score`` (resp. ``pearson``) as numbers or CSV
    strings, and optionally the ``score_band<k>`` columns (for ``phase`` / ``phase_end``);
    an empty value (not measurable) is skipped.

    Args:
        settings: Detection settings.
    """

    def __init__(self, settings: DetectionSettings | None = None) -> None:
        self.settings = settings or DetectionSettings()
        self.heads: dict[Head, _HeadState] = {}
        self.events: list[EmergenceEvent] = []

    def add_collision_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[EmergenceEvent]:
        """Process new ``collision_scores.csv`` rows; return the events they complete."""

        def react(head: Head, state: _HeadState, row: Mapping[str, Any]) -> list[EmergenceEvent]:
            events = self._threshold_events(head, state)
            if self.settings.power_law_source == "collision":
                events += self._power_law_event(head, state, state.score)
            return events + self._phase_events(head, state, row)

        return self._add_rows(rows, "score", lambda state: state.score, react)

    def add_distance_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[EmergenceEvent]:
        """Process new ``attention_distance.csv`` rows (used by the ``pearson`` observable)."""
        if self.settings.power_law_source != "distance":
            return []
        return self._add_rows(
            rows,
            "pearson",
            lambda state: state.observable,
            lambda head, state, row: self._power_law_event(head, state, state.observable),
        )

    def _add_rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        column: str,
        series_of: Callable[[_HeadState], _Series],
        react: Callable[[Head, _HeadState, Mapping[str, Any]], list[EmergenceEvent]],
    ) -> list[EmergenceEvent]:
        """Append each measurable row's ``column`` to its head's series, then ``react``."""
        new: list[EmergenceEvent] = []
        for row in rows:
            parsed = _parse(row, column, self.settings.time_axis)
            if parsed is None:
                continue
            head, step, lr_integral, value = parsed
            state = self.heads.setdefault(head, _HeadState())
            series_of(state).append(step, lr_integral, value)
            new += react(head, state, row)
        self.events += new
        return new

    # ----------------------------------------------------------------------------- internals
    def _onset_rise(self, baseline: float) -> float:
        return self.settings.onset_fraction * (self.settings.partial_threshold - baseline)

    def _threshold_events(self, head: Head, state: _HeadState) -> list[EmergenceEvent]:
        settings, series = self.settings, state.score
        events = []
        if "onset" not in state.fired and len(series) >= settings.baseline_points:
            baseline = series.baseline(settings.baseline_points)
            rise = max(self._onset_rise(baseline), settings.noise_z * series.noise())
            start = series.persistent_run_start(baseline + rise, settings.persistence)
            if start is not None and start >= settings.baseline_points:
                detail = (
                    f"score {series.values[start]:.3f} >= onset level {baseline + rise:.3f} "
                    f"(baseline {baseline:.3f} + {rise:.3f}) for {settings.persistence} "
                    "measurements"
                )
                events.append(self._event(head, state, "onset", series, start, detail))
        for name, threshold in (
            ("partial", settings.partial_threshold),
            ("true", settings.true_threshold),
        ):
            if name in state.fired:
                continue
            start = series.persistent_run_start(threshold, settings.persistence)
            if start is not None:
                detail = (
                    f"score {series.values[start]:.3f} >= {threshold:g} for "
                    f"{settings.persistence} measurements"
                )
                events.append(self._event(head, state, name, series, start, detail))
        return events

    def _phase_events(
        self, head: Head, state: _HeadState, row: Mapping[str, Any]
    ) -> list[EmergenceEvent]:
        """``phase`` / ``phase_end`` from the row's band scores (rows without bands: none)."""
        if "phase_end" in state.fired:
            return []
        bands = _band_state(row, self.settings.true_threshold)
        if bands is None:
            return []
        series = state.phase
        # the score of this row was just appended: same step and time
        series.append(state.score.steps[-1], state.score.lr_integral[-1], float(bands.low_only))
        state.bands.append(bands)
        persistence = self.settings.persistence
        if len(series) < persistence:
            return []
        tail = series.values[len(series) - persistence :]
        start = len(series) - persistence
        first = state.bands[start]
        threshold = f"{self.settings.true_threshold:g}"
        if "phase" not in state.fired and min(tail) == 1.0:
            detail = (
                f"true (>= {threshold}) below {first.true_below:.2f} of the box height, not "
                f"above, for {persistence} measurements: {first.summary}"
            )
            name = "phase"
        elif "phase" in state.fired and max(tail) == 0.0:
            how = "every band true" if first.true_below == 1.0 else "the low bands fell below"
            detail = f"{how} ({threshold}) for {persistence} measurements: {first.summary}"
            name = "phase_end"
        else:
            return []
        return [self._event(head, state, name, series, start, detail, value=first.true_below)]

    def _power_law_event(
        self, head: Head, state: _HeadState, series: _Series
    ) -> list[EmergenceEvent]:
        settings = self.settings
        if "power_law" in state.fired or len(series) <= settings.baseline_points:
            return []
        observable = settings.power_law_observable
        baseline = series.baseline(settings.baseline_points)
        departure = OBSERVABLE_BY_NAME[observable].sign * (np.asarray(series.values) - baseline)
        min_departure = settings.power_law_min_departure
        if min_departure is None:
            min_departure = (
                self._onset_rise(baseline) if observable == "score" else _DEFAULT_PEARSON_DEPARTURE
            )
        if departure[-1] < min_departure:
            return []
        axis = series.lr_integral if settings.time_axis == "gradient_flow" else series.steps
        time = np.asarray(axis, dtype=float)
        # The baseline measurements define D = 0; they cannot be part of the power law.
        floor = max(settings.noise_z * series.noise(), 0.0)
        window = _trailing_power_law(
            time[settings.baseline_points :],
            departure[settings.baseline_points :],
            floor,
            settings,
        )
        if window is None:
            return []
        start = window.start + settings.baseline_points
        detail = (
            f"{observable} departure ~ {TIME_COLUMNS[settings.time_axis]}^{window.exponent:.2f} "
            f"(+/- {window.exponent_se:.2f}) over {window.decades:.2f} decades "
            f"({window.points} points, scatter {window.scatter:.2f}) from step "
            f"{series.steps[start]}"
        )
        return [self._event(head, state, "power_law", series, start, detail, value=window.exponent)]

    @staticmethod
    def _event(
        head: Head,
        state: _HeadState,
        name: str,
        series: _Series,
        start: int,
        detail: str,
        value: float | None = None,
    ) -> EmergenceEvent:
        state.fired.add(name)
        return EmergenceEvent(
            step=series.steps[-1],
            lr_integral=series.lr_integral[-1],
            layer=head[0],
            head=head[1],
            event=name,
            event_step=series.steps[start],
            event_lr_integral=series.lr_integral[start],
            value=series.values[start] if value is None else value,
            detail=detail,
        )


def _parse(
    row: Mapping[str, Any], column: str, time_axis: TimeAxis
) -> tuple[Head, int, float, float] | None:
    """``(head, step, lr_integral, value)`` of a history row; None if the value is empty."""
    value = row.get(column, "")
    if value in ("", None) or math.isnan(float(value)):
        return None
    lr_integral = row.get("lr_integral", "")
    if lr_integral in ("", None):
        if time_axis == "gradient_flow":
            raise ValueError(
                "a history row has no lr_integral: use time_axis='step' for such histories"
            )
        lr_integral = math.nan
    head = (int(row["layer"]), int(row["head"]))
    return head, int(row["step"]), float(lr_integral), float(value)


# ------------------------------------------------------------------------------ replay API
def detect_events(
    collision_rows: Iterable[Mapping[str, Any]],
    distance_rows: Iterable[Mapping[str, Any]] | None = None,
    settings: DetectionSettings | None = None,
) -> list[EmergenceEvent]:
    """Replay finished histories through the detector; the events a live detector flags.

    Args:
        collision_rows: Rows of ``emergence/collision_scores.csv`` in file order (e.g. from
            :func:`lit_emergence.records.csv.read_rows`).
        distance_rows: Rows of ``emergence/attention_distance.csv``; needed only for
            ``settings.power_law_observable == "pearson"``.
        settings: Detection settings (default :class:`DetectionSettings`).

    Returns:
        The events, sorted by ``step``, head and event (:meth:`EmergenceEvent.sort_key`).

    Raises:
        ValueError: If the ``pearson`` observable is asked for without ``distance_rows``.
    """
    tracker = EmergenceTracker(settings)
    if tracker.settings.power_law_source == "distance" and distance_rows is None:
        raise ValueError(
            "power_law_observable='pearson' needs distance_rows (attention_distance.csv)"
        )
    tracker.add_collision_rows(collision_rows)
    if distance_rows is not None:
        tracker.add_distance_rows(distance_rows)
    return sorted(tracker.events, key=EmergenceEvent.sort_key)


@dataclass(frozen=True)
class LeadTime:
    """How early a head that became a true collision head was flagged.

    Attributes:
        layer: Layer of the head.
        head: Head index.
        true_step: Step at which the head reached the true threshold (``event_step`` of its
            ``true`` event).
        true_flagged_step: Step at which the ``true`` event itself was flagged.
        warnings: Flagged ``step`` of each warning event (:data:`WARNING_EVENTS`) flagged no
            later than the ``true`` event, by name.
        earliest_warning: Name of the first of them (ties: in the order of :data:`EVENTS`),
            or None.
        lead_steps: ``true_step`` minus the flagged step of the earliest warning (None without
            a warning); may be <= 0 when the warning came only as the threshold was reached.
    """

    layer: int
    head: int
    true_step: int
    true_flagged_step: int
    warnings: dict[str, int]
    earliest_warning: str | None
    lead_steps: int | None

    def lead_of(self, event: str) -> int | None:
        """``true_step`` minus the flagged step of one warning event (None if absent)."""
        step = self.warnings.get(event)
        return None if step is None else self.true_step - step


def lead_times(events: Iterable[EmergenceEvent]) -> list[LeadTime]:
    """Lead time of every head with a ``true`` event, sorted by layer and head.

    Args:
        events: Events of one run (from :func:`detect_events` or ``events.csv`` through
            :meth:`EmergenceEvent.from_row`).

    Returns:
        One :class:`LeadTime` per true collision head.
    """
    by_head: dict[Head, dict[str, EmergenceEvent]] = {}
    for event in events:
        by_head.setdefault((event.layer, event.head), {})[event.event] = event
    result = []
    for (layer, head), named in sorted(by_head.items()):
        true = named.get("true")
        if true is None:
            continue
        warnings = {
            name: named[name].step
            for name in WARNING_EVENTS
            if name in named and named[name].step <= true.step
        }
        earliest = min(
            warnings, key=lambda name: (warnings[name], EVENTS.index(name)), default=None
        )
        result.append(
            LeadTime(
                layer=layer,
                head=head,
                true_step=true.event_step,
                true_flagged_step=true.step,
                warnings=warnings,
                earliest_warning=earliest,
                lead_steps=None if earliest is None else true.event_step - warnings[earliest],
            )
        )
    return result


def read_events(path: str | os.PathLike) -> list[EmergenceEvent]:
    """The events of an ``emergence/events.csv`` file (missing: none)."""
    return [EmergenceEvent.from_row(row) for row in read_rows(path).rows]
