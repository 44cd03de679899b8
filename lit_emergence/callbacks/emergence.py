"""EmergenceDetector: flag, while training runs, when heads start to become collision detectors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_emergence.analysis.detection import (
    EVENT_COLUMNS,
    DetectionSettings,
    EmergenceEvent,
    EmergenceTracker,
    Observable,
    TimeAxis,
    read_history_rows,
)
from lit_emergence.callbacks.attention_distance import AttentionDistanceMonitor
from lit_emergence.callbacks.base import EMERGENCE_DIR, MeasurementCallback
from lit_emergence.callbacks.collision import CollisionDetectionMonitor
from lit_emergence.callbacks.history import CSVHistory

EVENTS_FILE = "events.csv"
# The two histories the detector reads, by the stream name used in its state.
_STREAM_FILES = {
    "collision": CollisionDetectionMonitor.history_file,
    "distance": AttentionDistanceMonitor.history_file,
}
_DESCRIPTIONS = {
    "onset": "started to rise towards collision detection",
    "power_law": "entered a power-law regime",
    "partial": "became a partial collision head",
    "true": "became a true collision head",
}


class EmergenceDetector(Callback):
    """Flag the step at which each head starts to emerge, enters a power law, turns collision head.

    Reads the histories that :class:`~lit_emergence.callbacks.CollisionDetectionMonitor`
    (``RUN_DIR/emergence/collision_scores.csv``) and, for the ``pearson`` observable,
    :class:`~lit_emergence.callbacks.AttentionDistanceMonitor`
    (``attention_distance.csv``) write, as they grow, and runs the causal detector of
    :mod:`lit_emergence.analysis.detection` on the new rows: events ``onset``, ``power_law``,
    ``partial`` and ``true``, each at most once per head (definitions: ``docs/detection.md``).
    Each event is appended (flushed, fsynced) to ``RUN_DIR/emergence/events.csv`` (step,
    lr_integral, layer, head, event, event_step, event_lr_integral, value, detail), printed as
    one line, and logged as ``emergence/events/<event>`` (how many heads have had it) and
    ``emergence/<event>_step/L<l>H<h>`` (its ``event_step``).

    * **Callback order does not matter**: an event's ``step`` is that of the measurement that
      completed it, not of the batch at which the detector read it.
    * **Training is never perturbed**: the detector reads CSV files; it does not touch the model,
      the optimizer, the data or any random state.
    * **DDP**: only global rank 0 writes the histories, so only rank 0 reads them and acts;
      the other ranks do nothing and no collective is needed (no rank waits on another).
    * **Resume**: the checkpoint holds the last history step consumed from each file; on
      resume the detector replays the histories up to those steps (rebuilding its state
      exactly, since a replay equals the live run) and cuts ``events.csv`` back to the events
      they produced, so every event appears exactly once.

    Args:
        true_threshold: Score of a true collision head; default the
            ``CollisionDetectionMonitor``'s (0.9).
        partial_threshold: Score of a partial collision head; default the monitor's (0.5).
        persistence: Consecutive measurements a threshold must hold.
        baseline_points: First measurements whose median is the initial level.
        onset_fraction: Minimum onset rise, as a fraction of the way to ``partial_threshold``.
        noise_z: Minimum onset rise (and power-law departure) in units of the noise.
        power_law_observable: ``"score"`` or ``"pearson"``; without an
            ``AttentionDistanceMonitor``, ``"pearson"`` falls back to ``"score"`` (with a
            warning).
        time_axis: ``"lr_integral"`` (gradient-flow time) or ``"step"``.
        power_law_min_decades: Shortest power-law window, in decades.
        power_law_min_points: Fewest measurements in a power-law window.
        power_law_max_scatter: Largest RMS log-residual about the power law.
        power_law_min_departure: Smallest departure from the initial level for the power-law
            test (``None``: the onset rise for the score, 0.1 for the Pearson r).
        verbose: Print one line per event.
    """

    def __init__(
        self,
        true_threshold: float | None = None,
        partial_threshold: float | None = None,
        persistence: int = 2,
        baseline_points: int = 3,
        onset_fraction: float = 0.25,
        noise_z: float = 4.0,
        power_law_observable: Observable = "score",
        time_axis: TimeAxis = "lr_integral",
        power_law_min_decades: float = 0.5,
        power_law_min_points: int = 4,
        power_law_max_scatter: float = 0.2,
        power_law_min_departure: float | None = None,
        verbose: bool = True,
    ) -> None:
        self.true_threshold = true_threshold
        self.partial_threshold = partial_threshold
        self.verbose = verbose
        self._options: dict[str, Any] = {
            "persistence": persistence,
            "baseline_points": baseline_points,
            "onset_fraction": onset_fraction,
            "noise_z": noise_z,
            "power_law_observable": power_law_observable,
            "time_axis": time_axis,
            "power_law_min_decades": power_law_min_decades,
            "power_law_min_points": power_law_min_points,
            "power_law_max_scatter": power_law_max_scatter,
            "power_law_min_departure": power_law_min_departure,
        }
        # Validate now, so that a bad setting fails when the Trainer is built.
        self.settings = self._settings(
            0.9 if true_threshold is None else true_threshold,
            0.5 if partial_threshold is None else partial_threshold,
        )
        self.tracker: EmergenceTracker | None = None
        self.history: CSVHistory | None = None
        self.consumed = dict.fromkeys(_STREAM_FILES, -1)
        self._restored: dict[str, int] | None = None
        self._file_stamps: dict[str, tuple[int, int] | None] = dict.fromkeys(_STREAM_FILES)

    def _settings(
        self, true_threshold: float, partial_threshold: float, **overrides: Any
    ) -> DetectionSettings:
        options = {**self._options, **overrides}
        return DetectionSettings(
            true_threshold=true_threshold, partial_threshold=partial_threshold, **options
        )

    @property
    def state_key(self) -> str:
        """Checkpoint key (one per events file, like the measurement callbacks)."""
        return f"{type(self).__qualname__}[{EVENTS_FILE}]"

    def state_dict(self) -> dict[str, Any]:
        """The last history step consumed from each file."""
        return {"consumed": dict(self.consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore; the state is rebuilt from the histories when training starts."""
        self._restored = {stream: int(step) for stream, step in state_dict["consumed"].items()}

    # ----------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check that a collision monitor writes the history, settle the settings."""
        # Checked on every rank, so that all ranks stop alike.
        collision = self._monitor(trainer, "collision")
        if collision is None:
            raise ValueError(
                "EmergenceDetector reads the collision-score history: add a "
                "CollisionDetectionMonitor to the Trainer's callbacks"
            )
        true_threshold = self.true_threshold
        if true_threshold is None:
            true_threshold = getattr(collision, "true_threshold", 0.9)
        partial_threshold = self.partial_threshold
        if partial_threshold is None:
            partial_threshold = getattr(collision, "partial_threshold", 0.5)
        observable = self._options["power_law_observable"]
        if observable == "pearson" and self._monitor(trainer, "distance") is None:
            rank_zero_warn(
                "EmergenceDetector: no AttentionDistanceMonitor, so the power-law test uses the "
                "collision score instead of the Pearson r"
            )
            observable = "score"
        self.settings = self._settings(
            true_threshold, partial_threshold, power_law_observable=observable
        )
        if trainer.is_global_zero:
            path = MeasurementCallback.run_dir(trainer) / EMERGENCE_DIR / EVENTS_FILE
            self.history = CSVHistory(path, EVENT_COLUMNS)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start over, or rebuild the state of a resumed run; then read what is there."""
        # After on_fit_start, so every monitor has already cut its history back on resume.
        if not trainer.is_global_zero:
            return
        assert self.history is not None, "on_fit_start opens the events file"
        self.tracker = EmergenceTracker(self.settings)
        self._file_stamps = dict.fromkeys(_STREAM_FILES)
        if self._restored is None:
            self.consumed = dict.fromkeys(_STREAM_FILES, -1)
            self.history.truncate_after(-1)
        else:
            self._rebuild(trainer, self._restored)
            self._restored = None
        self._poll(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Process the history rows written since the last call."""
        if trainer.is_global_zero:
            self._poll(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Catch the last measurement when the monitors run after this callback."""
        if trainer.is_global_zero:
            self._poll(trainer)

    # ----------------------------------------------------------------------------- internals
    def _streams(self) -> tuple[str, ...]:
        """The histories read: the collision scores, and the distances for the Pearson r."""
        return tuple(dict.fromkeys(("collision", self.settings.power_law_source)))

    @staticmethod
    def _monitor(trainer: Trainer, stream: str) -> Callback | None:
        """The callback that writes a stream's history (matched by its history file name)."""
        for callback in trainer.callbacks:
            if getattr(callback, "history_file", None) == _STREAM_FILES[stream]:
                return callback
        return None

    def _path(self, trainer: Trainer, stream: str) -> Path:
        return MeasurementCallback.run_dir(trainer) / EMERGENCE_DIR / _STREAM_FILES[stream]

    def _feed(self, stream: str, rows: list[dict[str, str]]) -> list[EmergenceEvent]:
        assert self.tracker is not None
        if stream == "collision":
            return self.tracker.add_collision_rows(rows)
        return self.tracker.add_distance_rows(rows)

    def _rebuild(self, trainer: Trainer, consumed: Mapping[str, int]) -> None:
        """Replay the histories up to the checkpoint and cut ``events.csv`` back to match."""
        assert self.history is not None and self.tracker is not None
        self.consumed = {stream: consumed.get(stream, -1) for stream in _STREAM_FILES}
        for stream in self._streams():
            rows = read_history_rows(self._path(trainer, stream))
            self._feed(stream, [r for r in rows if int(r["step"]) <= self.consumed[stream]])
        source = {"power_law": self.settings.power_law_source}
        kept = [
            row
            for row in self.history.read()
            if int(row["step"]) <= self.consumed[source.get(row["event"], "collision")]
        ]
        replayed = sorted(self.tracker.events, key=EmergenceEvent.sort_key)
        if sorted(map(EmergenceEvent.from_row, kept), key=EmergenceEvent.sort_key) != replayed:
            rank_zero_warn(
                f"EmergenceDetector: {self.history.path} disagreed with the histories up to the "
                "checkpoint; it is rewritten from them"
            )
            kept = [event.as_row() for event in replayed]
        self.history.truncate_after(-1)
        self.history.append(kept)

    def _poll(self, trainer: Trainer) -> None:
        new: list[EmergenceEvent] = []
        for stream in self._streams():
            path = self._path(trainer, stream)
            stamp = _file_stamp(path)
            if stamp is None or stamp == self._file_stamps[stream]:
                continue  # nothing written since the last look
            self._file_stamps[stream] = stamp
            rows = [r for r in read_history_rows(path) if int(r["step"]) > self.consumed[stream]]
            if rows:
                self.consumed[stream] = max(int(r["step"]) for r in rows)
                new += self._feed(stream, rows)
        if new:
            self._report(trainer, sorted(new, key=EmergenceEvent.sort_key))

    def _report(self, trainer: Trainer, events: list[EmergenceEvent]) -> None:
        assert self.history is not None and self.tracker is not None
        self.history.append(event.as_row() for event in events)
        metrics: dict[str, float] = {}
        for event in events:
            heads = {(e.layer, e.head) for e in self.tracker.events if e.event == event.event}
            metrics[f"emergence/events/{event.event}"] = len(heads)
            metrics[f"emergence/{event.event}_step/{event.head_name}"] = event.event_step
            if self.verbose:
                rank_zero_info(
                    f"EmergenceDetector: {event.head_name} {_DESCRIPTIONS[event.event]} at step "
                    f"{event.event_step} (flagged at step {event.step}): {event.detail}"
                )
        MeasurementCallback.send_scalars(trainer, metrics, trainer.global_step)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, modification time) of a file, None if it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns
