"""EmergenceDetector: flag, while training runs, when heads start to become collision detectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from lit_emergence.callbacks.base import MeasurementCallback, replaying, say
from lit_emergence.detection import (
    EVENT_COLUMNS,
    DetectionSettings,
    EmergenceEvent,
    EmergenceTracker,
)
from lit_emergence.records.csv import CSVHistory, read_rows
from lit_emergence.records.schema import (
    COLLISION,
    DEFAULT_PARTIAL_THRESHOLD,
    DEFAULT_TRUE_THRESHOLD,
    DISTANCE,
    EVENTS,
    HistorySpec,
)

# The two histories the detector reads, by the stream name used in its state.
_STREAMS: dict[str, HistorySpec] = {"collision": COLLISION, "distance": DISTANCE}
_DESCRIPTIONS = {
    "onset": "started to rise towards collision detection",
    "power_law": "entered a power-law regime",
    "partial": "became a partial collision head",
    "true": "became a true collision head",
    "phase": "detects collisions low in the box only (first phase)",
    "phase_end": "left its low-bands-only phase",
}


class EmergenceDetector(Callback):
    """Flag the step at which each head starts to emerge, enters a power law, turns collision head.

    Receives the rows that :class:`~lit_emergence.callbacks.CollisionDetectionMonitor`
    (``RUN_DIR/emergence/collision_scores.csv``) and, for the ``pearson`` observable,
    :class:`~lit_emergence.callbacks.AttentionDistanceMonitor` (``attention_distance.csv``)
    write, in memory as each measurement is written, and runs the causal detector of
    :mod:`lit_emergence.detection` on them: events ``onset``, ``power_law``, ``partial`` and
    ``true``, and, from the collision history's ``score_band<k>`` columns, ``phase`` (true in
    the low bands of query height but not the high ones) and ``phase_end``, each at most once
    per head (definitions: ``docs/detection.md``).
    Each event is appended (flushed, fsynced) to ``RUN_DIR/emergence/events.csv`` (step,
    lr_integral, layer, head, event, event_step, event_lr_integral, value, detail), printed as
    one line above the progress bar, and logged as ``emergence/events/<event>`` (how many heads
    have had it) and ``emergence/<event>_step/L<l>H<h>`` (its ``event_step``; in W&B a column
    ``<event>_step`` of the table ``emergence/heads``). A head that becomes a true collision
    head also raises a W&B alert (``wandb.alert``; ``wandb_alert=False`` turns it off), which
    W&B forwards by e-mail or Slack as set in the user's W&B settings.

    * **Callback order does not matter**: an event's ``step`` is that of the measurement that
      completed it, not of the batch at which the detector read it.
    * **Training is never perturbed**: the detector reads the monitors' rows; it does not touch
      the model, the optimizer, the data or any random state.
    * **DDP**: only global rank 0 writes the histories, so only rank 0 receives rows and acts;
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
        time_axis: ``"gradient_flow"`` (the ``lr_integral`` column) or ``"step"``
            (``"lr_integral"`` is read as ``"gradient_flow"``).
        power_law_min_decades: Shortest power-law window, in decades.
        power_law_min_points: Fewest measurements in a power-law window.
        power_law_max_scatter: Largest RMS log-residual about the power law.
        power_law_min_departure: Smallest departure from the initial level for the power-law
            test (``None``: the onset rise for the score, 0.1 for the Pearson r).
        verbose: Print one line per event.
        wandb_alert: Raise a W&B alert when a head becomes a true collision head (with a W&B
            logger only).
    """

    def __init__(
        self,
        true_threshold: float | None = None,
        partial_threshold: float | None = None,
        persistence: int = 2,
        baseline_points: int = 3,
        onset_fraction: float = 0.25,
        noise_z: float = 4.0,
        power_law_observable: str = "score",
        time_axis: str = "gradient_flow",
        power_law_min_decades: float = 0.5,
        power_law_min_points: int = 4,
        power_law_max_scatter: float = 0.2,
        power_law_min_departure: float | None = None,
        verbose: bool = True,
        wandb_alert: bool = True,
    ) -> None:
        self.true_threshold = true_threshold
        self.partial_threshold = partial_threshold
        self.verbose = verbose
        self.wandb_alert = wandb_alert
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
            DEFAULT_TRUE_THRESHOLD if true_threshold is None else true_threshold,
            DEFAULT_PARTIAL_THRESHOLD if partial_threshold is None else partial_threshold,
        )
        self.tracker: EmergenceTracker | None = None
        self.history: CSVHistory | None = None
        self.consumed = dict.fromkeys(_STREAMS, -1)
        self._restored: dict[str, int] | None = None
        # Rows received from the monitors and not yet fed to the tracker, by stream.
        self._inbox: dict[str, list[Mapping[str, Any]]] = {stream: [] for stream in _STREAMS}

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
        return f"{type(self).__qualname__}[{EVENTS.file}]"

    def state_dict(self) -> dict[str, Any]:
        """The last history step consumed from each file."""
        return {"consumed": dict(self.consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore; the state is rebuilt from the histories when training starts."""
        self._restored = {stream: int(step) for stream, step in state_dict["consumed"].items()}

    # ----------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check that a collision monitor writes the history, settle the settings, listen."""
        # Checked on every rank, so that all ranks stop alike.
        collision = self._monitor(trainer, "collision")
        if collision is None:
            raise ValueError(
                "EmergenceDetector reads the collision-score history: add a "
                "CollisionDetectionMonitor to the Trainer's callbacks"
            )
        true_threshold = self.true_threshold
        if true_threshold is None:
            true_threshold = getattr(collision, "true_threshold", DEFAULT_TRUE_THRESHOLD)
        partial_threshold = self.partial_threshold
        if partial_threshold is None:
            partial_threshold = getattr(collision, "partial_threshold", DEFAULT_PARTIAL_THRESHOLD)
        observable = self._options["power_law_observable"]
        distance = self._monitor(trainer, "distance")
        if observable == "pearson" and distance is None:
            rank_zero_warn(
                "EmergenceDetector: no AttentionDistanceMonitor, so the power-law test uses the "
                "collision score instead of the Pearson r"
            )
            observable = "score"
        self.settings = self._settings(
            true_threshold, partial_threshold, power_law_observable=observable
        )
        self._inbox = {stream: [] for stream in _STREAMS}
        for monitor in (collision, distance):
            if isinstance(monitor, MeasurementCallback):
                monitor.add_listener(self._receive)
        if trainer.is_global_zero:
            path = EVENTS.path(MeasurementCallback.run_dir(trainer))
            self.history = CSVHistory(path, EVENT_COLUMNS)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start over, or rebuild the state of a resumed run; then take in what arrived."""
        # After on_fit_start, so every monitor has already cut its history back on resume.
        if not trainer.is_global_zero:
            return
        assert self.history is not None, "on_fit_start opens the events file"
        self.tracker = EmergenceTracker(self.settings)
        if self._restored is None:
            self.consumed = dict.fromkeys(_STREAMS, -1)
            self.history.truncate_after(-1)
        else:
            self._rebuild(trainer, self._restored)
            self._restored = None
        self._poll(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Process the history rows received since the last call."""
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
            if getattr(callback, "history_file", None) == _STREAMS[stream].file:
                return callback
        return None

    def _receive(self, spec: HistorySpec, rows: list[dict[str, Any]]) -> None:
        """A monitor wrote ``rows``: keep them until the next time the detector acts."""
        for stream in self._streams():
            if spec.file == _STREAMS[stream].file:
                self._inbox[stream].extend(rows)

    def _feed(self, stream: str, rows: list[dict[str, str]]) -> list[EmergenceEvent]:
        assert self.tracker is not None
        if stream == "collision":
            return self.tracker.add_collision_rows(rows)
        return self.tracker.add_distance_rows(rows)

    def _rebuild(self, trainer: Trainer, consumed: Mapping[str, int]) -> None:
        """Replay the histories up to the checkpoint and cut ``events.csv`` back to match.

        Rows written after the detector's last look (and before the checkpoint, or since the
        resumed run started) are read from disk too, and wait for the next look as if just
        received: the files hold everything the monitors wrote so far.
        """
        assert self.history is not None and self.tracker is not None
        self.consumed = {stream: consumed.get(stream, -1) for stream in _STREAMS}
        run_dir = MeasurementCallback.run_dir(trainer)
        for stream in self._streams():
            rows = read_rows(_STREAMS[stream].path(run_dir)).rows
            self._feed(stream, [r for r in rows if int(r["step"]) <= self.consumed[stream]])
            self._inbox[stream] = [r for r in rows if int(r["step"]) > self.consumed[stream]]
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
        # The per-head event steps logged before the checkpoint, for W&B's emergence/heads.
        with replaying():
            for event in map(EmergenceEvent.from_row, kept):
                metrics = {f"emergence/{event.event}_step/{event.head_name}": event.event_step}
                MeasurementCallback.send_scalars(trainer, metrics, event.step)

    def _poll(self, trainer: Trainer) -> None:
        new: list[EmergenceEvent] = []
        for stream in self._streams():
            received, self._inbox[stream] = self._inbox[stream], []
            rows = [r for r in received if int(r["step"]) > self.consumed[stream]]
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
            message = (
                f"EmergenceDetector: {event.head_name} {_DESCRIPTIONS[event.event]} at step "
                f"{event.event_step} (flagged at step {event.step}): {event.detail}"
            )
            if self.verbose:
                say(trainer, message)
            if event.event == "true" and self.wandb_alert:
                self._alert(trainer, event, message)
        MeasurementCallback.send_scalars(trainer, metrics, trainer.global_step)

    @staticmethod
    def _alert(trainer: Trainer, event: EmergenceEvent, message: str) -> None:
        """A W&B alert for a new true collision head, on every W&B logger (rank 0)."""
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                alert = getattr(run, "alert", None)
                if callable(alert):
                    alert(
                        title=f"{event.head_name} became a true collision head",
                        text=f"{run.name}: {message.removeprefix('EmergenceDetector: ')}",
                    )
