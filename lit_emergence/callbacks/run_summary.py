"""RunSummary: say where a run lives when it starts, and what emerged when it ends."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from lit_emergence.callbacks.base import MeasurementCallback, say
from lit_emergence.callbacks.emergence import EmergenceDetector
from lit_emergence.detection import EmergenceEvent, lead_times, read_events
from lit_emergence.records.csv import read_rows
from lit_emergence.records.schema import (
    COLLISION,
    CONFIG_FILE,
    DEFAULT_PARTIAL_THRESHOLD,
    DEFAULT_TRUE_THRESHOLD,
    EVENTS,
    LLC,
    SUMMARY_FILE,
    WHOLE_MODEL,
    HistorySpec,
    head_label,
    llc_component,
)
from lit_emergence.records.summary import FitSummary, HeadOutcome, LLCOutcome

#: The logged values the summary reports as final losses: names starting with these.
LOSS_PREFIXES = ("train/", "val/")
#: At most this many of them.
MAX_LOSSES = 8


class RunSummary(Callback):
    """Print the run directory when a fit starts and a summary of what emerged when it ends.

    At the end of every ``fit`` (global rank 0 only; no collective, so DDP cannot hang on it):

    * the true and partial collision heads with their final scores and the step each became
      so (from the rows a :class:`~lit_emergence.callbacks.CollisionDetectionMonitor` writes),
    * the :class:`~lit_emergence.callbacks.EmergenceDetector`'s earliest warning and lead time
      for each (from ``emergence/events.csv``),
    * the LLC of the whole model and of the listed heads at the last
      :class:`~lit_emergence.callbacks.LLCMonitor` measurement,
    * the final losses (``trainer.callback_metrics``), and what to run next.

    It is printed above the progress bar, written to ``RUN_DIR/summary.md`` and
    ``RUN_DIR/summary.json`` (atomically; :mod:`lit_emergence.records.summary`), and, with a W&B
    logger, put into the W&B run's summary (``summary/*`` keys and a ``summary/heads`` table)
    with ``summary.md`` as a run file. Absent instruments are named, not errors: the summary
    says what it could not report. A resumed run's summary covers the whole run (the rows
    before the checkpoint are read back from the histories).

    ``lit-emergence fit`` adds one to every run; add it to your own ``Trainer``'s callbacks to
    get the same.

    Args:
        write_files: Write ``summary.md`` and ``summary.json`` into the run directory.
        print_summary: Print the summary (and the run directory at the start).
        log_wandb: Put the summary into the W&B run of every W&B logger.
    """

    def __init__(
        self, write_files: bool = True, print_summary: bool = True, log_wandb: bool = True
    ) -> None:
        self.write_files = write_files
        self.print_summary = print_summary
        self.log_wandb = log_wandb
        self.summary: FitSummary | None = None
        # History rows received (or read back on resume), keyed so that nothing counts twice:
        # collision: step -> (layer, head) -> row; llc: step -> component -> row.
        self._collision: dict[int, dict[tuple[int, int], Mapping[str, Any]]] = {}
        self._llc: dict[int, dict[str, Mapping[str, Any]]] = {}
        self._monitors: dict[str, Callback | None] = {}
        self._started = 0.0
        self._resumed_from: int | None = None
        self._unprinted: str | None = None

    # ----------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Listen to the monitors' rows and print the run directory (rank 0)."""
        self._collision, self._llc = {}, {}
        self._started = time.monotonic()
        self._resumed_from = None
        self._monitors = {spec.name: _writer(trainer, spec) for spec in (COLLISION, LLC)}
        for monitor in self._monitors.values():
            if isinstance(monitor, MeasurementCallback):
                monitor.add_listener(self._receive)
        if trainer.is_global_zero and self.print_summary:
            where = _shown(MeasurementCallback.run_dir(trainer))
            resuming = ""
            if trainer.ckpt_path:
                resuming = f" (resuming from {_shown(Path(trainer.ckpt_path))})"
            say(trainer, f"lit-emergence: run directory {where}{resuming}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On resume, read back the rows measured before the checkpoint (rank 0)."""
        # The loops' state (the step) is restored after on_fit_start, before this hook.
        self._resumed_from = trainer.global_step or None
        if not trainer.is_global_zero or not self._resumed_from:
            return
        run_dir = MeasurementCallback.run_dir(trainer)
        for spec in (COLLISION, LLC):
            if self._monitors.get(spec.name) is not None and spec.path(run_dir).is_file():
                rows = [
                    row
                    for row in read_rows(spec.path(run_dir)).rows
                    if int(row["step"]) <= trainer.global_step
                ]
                self._receive(spec, rows)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Summarise, print, write ``summary.md`` and fill the W&B run summary (rank 0)."""
        if not trainer.is_global_zero:
            return
        self.summary = summary = self.build(trainer)
        run_dir = MeasurementCallback.run_dir(trainer)
        if self.write_files:
            run_dir.mkdir(parents=True, exist_ok=True)
            summary.write(run_dir)
        if self.log_wandb:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    _to_wandb(logger, summary, run_dir / SUMMARY_FILE if self.write_files else None)
        # Printed at teardown, after the progress bar has drawn its last frame (when it comes
        # before this callback, as in lit-emergence fit), so the summary ends the output.
        self._unprinted = summary.markdown() if self.print_summary else None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Print the summary that ``on_fit_end`` made (rank 0)."""
        if self._unprinted is not None and trainer.is_global_zero:
            say(trainer, "\n" + self._unprinted)
        self._unprinted = None

    # ----------------------------------------------------------------------------- building
    def build(self, trainer: Trainer) -> FitSummary:
        """The summary of the fit so far (rank 0: the rows are received there)."""
        run_dir = MeasurementCallback.run_dir(trainer)
        collision = self._monitors.get("collision")
        true_threshold = float(getattr(collision, "true_threshold", DEFAULT_TRUE_THRESHOLD))
        partial_threshold = float(
            getattr(collision, "partial_threshold", DEFAULT_PARTIAL_THRESHOLD)
        )
        detector = next((c for c in trainer.callbacks if isinstance(c, EmergenceDetector)), None)
        events: list[EmergenceEvent] = []
        if detector is not None and EVENTS.path(run_dir).is_file():
            events = read_events(EVENTS.path(run_dir))
        llc_step = max(self._llc, default=None)
        llc_rows = self._llc.get(llc_step, {}) if llc_step is not None else {}
        heads, best, measured = self._heads(true_threshold, partial_threshold, events, llc_rows)
        notes = []
        if collision is None:
            notes.append("no CollisionDetectionMonitor: no collision scores")
        return FitSummary(
            run_dir=_shown(run_dir),
            name=run_dir.name,
            step=trainer.global_step,
            wall_seconds=time.monotonic() - self._started if self._started else None,
            resumed_from=self._resumed_from,
            true_threshold=true_threshold,
            partial_threshold=partial_threshold,
            measured_step=measured,
            num_heads=len(self._collision.get(measured, {})) if measured is not None else 0,
            heads=tuple(heads),
            best=best,
            detector=detector is not None,
            num_events=len(events),
            llc=_model_llc(llc_step, llc_rows),
            losses=_losses(trainer),
            notes=tuple(notes),
            commands=tuple(_commands(trainer, run_dir)),
            wandb_dir=_wandb_dir(trainer),
        )

    def _heads(
        self,
        true_threshold: float,
        partial_threshold: float,
        events: list[EmergenceEvent],
        llc_rows: Mapping[str, Mapping[str, Any]],
    ) -> tuple[list[HeadOutcome], HeadOutcome | None, int | None]:
        """The true and partial heads (true first, by score), the best head, the last step."""
        if not self._collision:
            return [], None, None
        steps = sorted(self._collision)
        last = steps[-1]
        leads = {(lead.layer, lead.head): lead for lead in lead_times(events)}
        warnings = _earliest_warnings(events)
        outcomes = []
        for (layer, head), row in sorted(self._collision[last].items()):
            score = _float(row.get("score"))
            if not math.isfinite(score):
                continue
            head_class = (
                "true"
                if score >= true_threshold
                else "partial"
                if score >= partial_threshold
                else "none"
            )
            threshold = {"true": true_threshold, "partial": partial_threshold}.get(head_class)
            lead = leads.get((layer, head))
            warning = warnings.get((layer, head))
            llc = llc_rows.get(llc_component(layer, head), {})
            outcomes.append(
                HeadOutcome(
                    label=head_label(layer, head),
                    layer=layer,
                    head=head,
                    head_class=head_class,
                    score=score,
                    since_step=None
                    if threshold is None
                    else self._since(steps, (layer, head), threshold),
                    warning=warning[0] if warning else None,
                    warning_step=warning[1] if warning else None,
                    lead_steps=lead.lead_steps if lead and head_class == "true" else None,
                    llc=_optional_float(llc.get("llc_mean")),
                    llc_std=_optional_float(llc.get("llc_std")),
                )
            )
        best = max(outcomes, key=lambda h: h.score, default=None)
        order = {"true": 0, "partial": 1}
        listed = sorted(
            (h for h in outcomes if h.head_class in order),
            key=lambda h: (order[h.head_class], -h.score),
        )
        return listed, best, last

    def _since(self, steps: list[int], head: tuple[int, int], threshold: float) -> int:
        """First step of the last unbroken run of measurements at or above ``threshold``."""
        since = steps[-1]
        for step in reversed(steps):
            row = self._collision[step].get(head)
            if row is None or not _float(row.get("score")) >= threshold:
                break
            since = step
        return since

    def _receive(self, spec: HistorySpec, rows: list[dict[str, Any]]) -> None:
        """Keep the rows a monitor wrote (rank 0)."""
        if spec.file == COLLISION.file:
            for row in rows:
                key = (int(row["layer"]), int(row["head"]))
                self._collision.setdefault(int(row["step"]), {})[key] = row
        elif spec.file == LLC.file:
            for row in rows:
                self._llc.setdefault(int(row["step"]), {})[str(row["component"])] = row


# --------------------------------------------------------------------------------- helpers
def _writer(trainer: Trainer, spec: HistorySpec) -> Callback | None:
    """The callback that writes a history (matched by its file name), or None."""
    for callback in trainer.callbacks:
        if getattr(callback, "history_file", None) == spec.file:
            return callback
    return None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _optional_float(value: Any) -> float | None:
    number = _float(value)
    return number if math.isfinite(number) else None


def _earliest_warnings(events: list[EmergenceEvent]) -> dict[tuple[int, int], tuple[str, int]]:
    """Each head's first warning (onset, power_law, partial) and the step it was flagged."""
    from lit_emergence.detection import EVENTS as ORDER
    from lit_emergence.detection import WARNING_EVENTS

    earliest: dict[tuple[int, int], tuple[str, int]] = {}
    for event in sorted(events, key=lambda e: (e.step, ORDER.index(e.event))):
        if event.event in WARNING_EVENTS:
            earliest.setdefault((event.layer, event.head), (event.event, event.step))
    return earliest


def _model_llc(step: int | None, rows: Mapping[str, Mapping[str, Any]]) -> LLCOutcome | None:
    row = rows.get(WHOLE_MODEL)
    if step is None or row is None:
        return None
    return LLCOutcome(
        step=step,
        mean=_float(row.get("llc_mean")),
        std=_float(row.get("llc_std")),
        verdict=str(row.get("verdict", "") or ""),
    )


def _losses(trainer: Trainer) -> dict[str, float]:
    """Final training and validation values from ``trainer.callback_metrics``."""
    found = {}
    for key in sorted(trainer.callback_metrics):
        if key.startswith(LOSS_PREFIXES):
            try:
                found[key] = float(trainer.callback_metrics[key])
            except (TypeError, ValueError, RuntimeError):
                continue
    ordered = sorted(
        found, key=lambda k: (not k.startswith("train/"), "loss" not in k, _natural(k))
    )
    return {key: found[key] for key in ordered[:MAX_LOSSES]}


def _natural(key: str) -> tuple[Any, ...]:
    """Sort key with numbers as numbers: ``rmse_h5`` before ``rmse_h10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        relative = Path(os.path.relpath(path))
    except ValueError:  # another drive
        return str(path)
    return str(path) if relative.parts[:1] == ("..",) else str(relative)


def _commands(trainer: Trainer, run_dir: Path) -> list[str]:
    shown = _shown(run_dir)
    commands = [f"lit-emergence report {shown}   # figures and tables into {shown}/report"]
    if (run_dir / CONFIG_FILE).is_file():
        longer = max(2 * trainer.global_step, 1)
        commands.append(
            f"lit-emergence fit --config {shown}/{CONFIG_FILE} --ckpt_path last "
            f"--trainer.max_steps {longer}   # train on"
        )
    wandb_dir = _wandb_dir(trainer)
    if wandb_dir is not None and Path(wandb_dir).name.startswith("offline-run-"):
        commands.append(f"wandb sync {_shown(Path(wandb_dir))}   # upload the offline W&B run")
    return commands


def _wandb_dir(trainer: Trainer) -> str | None:
    """The local directory of the first W&B logger's run (None: no W&B run started)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            directory = getattr(logger.experiment, "dir", None)
            if directory:
                return str(Path(directory).parent)
    return None


def _to_wandb(logger: WandbLogger, summary: FitSummary, markdown: Path | None) -> None:
    """The summary into a W&B run: ``summary/*`` keys, a heads table, ``summary.md``."""
    import wandb

    run = logger.experiment
    values: dict[str, Any] = {
        "summary/run_dir": summary.run_dir,
        "summary/step": summary.step,
        "summary/headline": summary.headline(),
        "summary/num_true": len(summary.of_class("true")),
        "summary/num_partial": len(summary.of_class("partial")),
        "summary/true_heads": ", ".join(h.label for h in summary.of_class("true")),
        "summary/partial_heads": ", ".join(h.label for h in summary.of_class("partial")),
    }
    if summary.best is not None:
        values["summary/best_head"] = summary.best.label
        values["summary/best_score"] = summary.best.score
    if summary.llc is not None:
        values["summary/llc_model"] = summary.llc.mean
    if summary.lead_steps():
        values["summary/first_lead_steps"] = summary.lead_steps()[0]
    for key, value in summary.losses.items():
        values[f"summary/{key.replace('/', '_')}"] = value
    columns = ["head", "layer", "head_index", "class", "score", "since_step"]
    columns += ["first_warning", "warning_step", "lead_steps", "llc"]
    values["summary/heads"] = wandb.Table(
        columns=columns,
        data=[_head_row(h) for h in summary.heads],
        allow_mixed_types=True,
    )
    run.summary.update(values)
    if markdown is not None and markdown.is_file():
        # A real file in the run's files (not a link to one that may move).
        copy = Path(run.dir) / SUMMARY_FILE
        copy.write_text(markdown.read_text())
        run.save(str(copy), base_path=run.dir, policy="now")


def _head_row(h: HeadOutcome) -> list[Any]:
    """A row of the W&B ``summary/heads`` table."""
    return [
        h.label,
        h.layer,
        h.head,
        h.head_class,
        h.score,
        h.since_step,
        h.warning,
        h.warning_step,
        h.lead_steps,
        h.llc,
    ]
