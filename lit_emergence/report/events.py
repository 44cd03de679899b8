"""Emergence events of a run: as its live detector recorded them, or replayed from histories.

A run trained with :class:`~lit_emergence.callbacks.EmergenceDetector` has
``emergence/events.csv``; for any other run the same detector is replayed over the collision
(and attention-distance) histories with the run's thresholds
(:func:`lit_emergence.detection.detect_events`, which gives the events a live detector
would have flagged). The report marks them in Figure 1 and lists them in ``events.csv``.

A head's ``phase`` and ``phase_end`` events delimit its phases by height (:meth:`RunEvents.phases`):
the first phase, in which it detects collisions only low in the box, from ``phase`` to
``phase_end`` (or to the end of training), and the second, in which it detects them at every
height, from a ``phase_end`` whose value is 1 (every band true) on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lit_emergence.detection import (
    EVENT_COLUMNS,
    DetectionSettings,
    EmergenceEvent,
    detect_events,
    read_events,
)
from lit_emergence.dynamics import TimeAxis
from lit_emergence.records.csv import read_rows
from lit_emergence.records.run import Run

#: Columns of the report's ``events.csv``.
EVENT_TABLE_COLUMNS: tuple[str, ...] = ("run", "source", *EVENT_COLUMNS)


@dataclass(frozen=True)
class Phase:
    """One phase of a head by height, as its ``phase`` / ``phase_end`` events delimit it.

    Attributes:
        name: ``"first phase"`` or ``"second phase"``.
        description: What the head does in it, e.g. ``"true below 0.25 of the box height only"``.
        start_step: The step it begins at.
        end_step: The step it ends at (exclusive), ``None`` if it lasts to the end of training.
        start: Its beginning on the report's time axis.
        end: Its end on the time axis (``inf`` if it lasts to the end of training).
        height: The fraction of the box height below which the head is true when the phase
            begins (the ``phase`` event's value; 1 for the second phase).
    """

    name: str
    description: str
    start_step: int
    end_step: int | None
    start: float
    end: float
    height: float = math.nan


def event_time(event: EmergenceEvent, time_axis: TimeAxis) -> float:
    """When an event happened on the report's time axis (``event_step`` or its ``lr_integral``)."""
    return float(event.event_lr_integral if time_axis == "gradient_flow" else event.event_step)


@dataclass(frozen=True)
class RunEvents:
    """The emergence events of one run.

    Attributes:
        run: Run name.
        events: The events.
        source: ``"recorded"`` (the run's ``events.csv``) or ``"replayed"``.
    """

    run: str
    events: tuple[EmergenceEvent, ...]
    source: str

    def for_head(self, layer: int, head: int, time_axis: TimeAxis) -> list[tuple[float, str]]:
        """``(time the event refers to, event name)`` of one head, for Figure 1's markers."""
        return [
            (event_time(e, time_axis), str(e.event))
            for e in self.events
            if (e.layer, e.head) == (layer, head)
        ]

    def phases(self, layer: int, head: int, time_axis: TimeAxis) -> list[Phase]:
        """The head's phases by height, in order (none without a ``phase`` event)."""
        mine = {e.event: e for e in self.events if (e.layer, e.head) == (layer, head)}
        begin, end = mine.get("phase"), mine.get("phase_end")
        if begin is None:
            return []
        phases = [
            Phase(
                "first phase",
                f"true below {begin.value:.2g} of the box height only",
                begin.event_step,
                end.event_step if end is not None else None,
                event_time(begin, time_axis),
                event_time(end, time_axis) if end is not None else math.inf,
                begin.value,
            )
        ]
        if end is not None and end.value >= 1.0:
            phases.append(
                Phase(
                    "second phase",
                    "true at every height",
                    end.event_step,
                    None,
                    event_time(end, time_axis),
                    math.inf,
                    end.value,
                )
            )
        return phases

    def records(self) -> list[dict[str, Any]]:
        """Rows of the report's ``events.csv``: the run, the source, then the event's columns."""
        return [{"run": self.run, "source": self.source, **e.as_row()} for e in self.events]


def run_events(run: Run) -> RunEvents:
    """The run's recorded events, else the detector replayed over its histories.

    Raises:
        Unavailable: Without ``events.csv`` and without a collision history to replay.
    """
    if run.events_path.is_file():
        return RunEvents(run.name, tuple(read_events(run.events_path)), "recorded")
    collision = run.history("collision")
    distance = run.histories.get("distance")
    true_threshold, partial_threshold = run.thresholds
    events = detect_events(
        read_rows(collision.path).rows,
        read_rows(distance.path).rows if distance is not None else None,
        DetectionSettings(true_threshold=true_threshold, partial_threshold=partial_threshold),
    )
    return RunEvents(run.name, tuple(events), "replayed")
