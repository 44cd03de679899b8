"""The shared machinery of measurement callbacks: schedule, probe set, history, non-interference.

A :class:`MeasurementCallback` runs :meth:`~MeasurementCallback.measure` at the steps its
schedule names (step 0 — the untrained model — included), on a probe set fixed once at the start
of training, and appends the resulting rows to a CSV history in ``RUN_DIR/emergence/``.

What it guarantees, so it can sit in anyone's ``Trainer``:

* **No perturbation.** Measurements run under ``torch.no_grad`` in eval mode; every module's
  train/eval flag is restored afterwards, the global CPU/CUDA RNG states are forked and
  restored, and parameters, gradients and optimizer state are never written.
* **DDP.** The probe set is split across ranks; subclasses reduce sufficient statistics (e.g.
  torchmetrics with ``dist_reduce_fx="sum"``), so every rank reaches every collective and the
  result equals the single-process one. Only global rank 0 writes files and logs.
* **Nothing lost.** Rows are appended, flushed and fsynced at every measurement. The callback
  state (last measured step, learning-rate integral) travels in checkpoints; on resume the
  history is cut back to the checkpoint's step, so every scheduled step appears exactly once.
* **Gradient-flow time.** The integral of the learning rate over optimizer steps (the time axis
  of gradient-flow theory) is tracked and written with every row as ``lr_integral``.

How measurements reach the loggers (:meth:`MeasurementCallback.send_scalars`): every logger but
W&B gets every scalar, as logged (``collision/score/L1H6``, ...). W&B gets the scalars that are
not per head as they are; the per-head ones (keys ending in ``/L<l>H<h>`` or ``/l<l>h<h>``) are
gathered by :class:`WandbHeadTables` into one ``wandb.Table`` per family (``collision/heads``:
a row per step and head, a column per quantity) and one multi-line chart per headline quantity
(:data:`HEADLINE_QUANTITIES`; ``collision/score_by_head``: a line per head), logged at the
figure schedule (steps 0, 1, 10, 100, ...) and when training ends. So a W&B run has a few dozen
panels, not hundreds, and the histories in ``RUN_DIR/emergence/`` keep every value.
Messages for the user go through :func:`say`, above the progress bar, on global rank 0.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet, select_probe_set
from lit_emergence.callbacks.protocol import SHARED_ATTENTION
from lit_emergence.records.csv import CSVHistory, read_rows
from lit_emergence.records.schema import EMERGENCE_DIR, HistorySpec, head_label

# A LogSchedule (configurable from YAML) or any `step -> bool` callable.
Schedule = LogSchedule | Callable[[int], bool]
# Called with (history spec, rows) after every measurement written (rank 0).
RowsListener = Callable[[HistorySpec, list[dict[str, Any]]], None]


class MeasurementCallback(Callback):
    """Base class: measure at scheduled steps on a fixed probe set and persist a history.

    Subclasses set :attr:`history_spec` (which file of ``emergence/`` they write, from
    :mod:`lit_emergence.records.schema`; a history of your own may set just
    ``history_file = "mine.csv"``) and implement :meth:`fieldnames` and :meth:`measure`.
    Other callbacks can receive each measurement's rows as they are written
    (:meth:`add_listener`), without reading the file back.

    Args:
        schedule: ``step -> bool``; default :class:`~lit_emergence.callbacks.LogSchedule` with
            6 points per decade. Subclasses may also override :meth:`should_run`.
        num_probe_samples: Size of the probe set (split across DDP ranks).
        probe_batch_size: Samples per forward pass while measuring (bounds memory).
        probe_seed: Seed of the probe selection.
        probe: An explicit probe batch (dict of tensors with a leading sample dimension); by
            default it is taken from the datamodule (see :func:`select_probe_set`).
        log_images: Log figures to image-capable loggers (W&B) as well as scalars.
    """

    history_spec: HistorySpec | None = None
    #: Which split ``datamodule.probe_batch`` draws from.
    probe_split: str = "val"
    #: Split the probe set across DDP ranks (False: every rank gets all of it).
    shard_probe: bool = True

    def __init__(
        self,
        schedule: Schedule | None = None,
        num_probe_samples: int = 256,
        probe_batch_size: int = 64,
        probe_seed: int = 0,
        probe: Mapping[str, Tensor] | None = None,
        log_images: bool = True,
    ) -> None:
        if num_probe_samples < 1:
            raise ValueError(f"num_probe_samples must be >= 1, got {num_probe_samples}")
        if probe_batch_size < 1:
            raise ValueError(f"probe_batch_size must be >= 1, got {probe_batch_size}")
        self.schedule: Schedule = schedule if schedule is not None else LogSchedule()
        self.num_probe_samples = num_probe_samples
        self.probe_batch_size = probe_batch_size
        self.probe_seed = probe_seed
        self.explicit_probe = probe
        self.log_images = log_images
        self.probe: ProbeSet | None = None
        self.history: CSVHistory | None = None
        self.last_measured_step = -1
        self.lr_integral = 0.0
        self._restored_step: int | None = None
        self._listeners: list[RowsListener] = []

    @property
    def history_file(self) -> str:
        """File name of the history inside ``RUN_DIR/emergence/``."""
        return self.spec.file

    @property
    def spec(self) -> HistorySpec:
        """What the history is: :attr:`history_spec`, or one made from ``history_file``."""
        if self.history_spec is not None:
            return self.history_spec
        if isinstance(getattr(type(self), "history_file", None), property):
            raise TypeError(
                f"{type(self).__name__} must set history_spec or history_file (the CSV it writes)"
            )
        file = self.history_file  # a subclass's own class attribute
        return HistorySpec(
            name=file.removesuffix(".csv"),
            file=file,
            writer=type(self).__name__,
            columns=("step", "lr_integral"),
            required=("step",),
        )

    def add_listener(self, listener: RowsListener) -> None:
        """Call ``listener(history_spec, rows)`` with the rows of every measurement written.

        Listeners run on global rank 0 only, right after the rows are appended to the file.
        """
        if listener not in self._listeners:
            self._listeners.append(listener)

    # ----------------------------------------------------------------------------- to override
    def should_run(self, step: int) -> bool:
        """Whether to measure after ``step`` optimizer steps (default: the schedule)."""
        return self.schedule(step)

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """Columns of the history file (must include ``step`` and ``lr_integral``)."""
        raise NotImplementedError

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Compute the measurement on this rank's probe shard; return the history rows.

        Called on every rank (collectives allowed and required to be reached by all); the rows
        returned by global rank 0 are written. ``step`` and ``lr_integral`` are filled in.
        """
        raise NotImplementedError

    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """Send the measurement to the loggers (rank 0 only). Default: nothing."""

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def run_dir(trainer: Trainer) -> Path:
        """Return the run directory (``trainer.default_root_dir``)."""
        return Path(trainer.default_root_dir)

    @staticmethod
    def send_scalars(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
        """Log scalars to every logger at an explicit step (rank 0 only).

        W&B loggers get the per-head scalars as tables and multi-line charts instead (see the
        module docstring and :class:`WandbHeadTables`); the other loggers get every scalar.
        """
        for logger in trainer.loggers:
            tables = WandbHeadTables.of(logger)
            if tables is not None:
                tables.log(logger, metrics, step)
            elif not _replaying:
                logger.log_metrics(metrics, step=step)

    def images_due(self, trainer: Trainer, step: int, image_schedule: Schedule) -> bool:
        """Whether to draw figures now: rank 0, images on, due, and a logger that takes them."""
        return (
            trainer.is_global_zero
            and self.log_images
            and image_schedule(step)
            and any(callable(getattr(lg, "log_image", None)) for lg in trainer.loggers)
        )

    @staticmethod
    def send_images(
        trainer: Trainer, key: str, images: list[Any], step: int, captions: list[str] | None = None
    ) -> None:
        """Log images to loggers that take images (W&B); others are skipped."""
        if _replaying:
            return
        for logger in trainer.loggers:
            log_image = getattr(logger, "log_image", None)
            if callable(log_image):
                kwargs = {"caption": captions} if captions is not None else {}
                log_image(key=key, images=images, step=step, **kwargs)

    @property
    def state_key(self) -> str:
        """Checkpoint key: one entry per callback class and history file."""
        return f"{type(self).__qualname__}[{self.history_file}]"

    # ----------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fix the probe set, open the history and cut it back on resume."""
        SHARED_ATTENTION.clear(pl_module)
        emergence_dir = self.run_dir(trainer) / EMERGENCE_DIR
        self.probe = select_probe_set(
            trainer,
            emergence_dir / self.spec.probe_file,
            num_samples=self.num_probe_samples,
            seed=self.probe_seed,
            explicit=self.explicit_probe,
            split=self.probe_split,
            shard=self.shard_probe,
        )
        if trainer.is_global_zero:
            self.history = CSVHistory(
                emergence_dir / self.history_file, self.fieldnames(trainer, pl_module)
            )
            if self._restored_step is not None:
                self.history.truncate_after(self._restored_step)
                self._replay_for_wandb(trainer, pl_module)
            elif trainer.global_step == 0:
                # A fresh run in a directory with an old history: start it over.
                self.history.truncate_after(-1)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure the untrained model (step 0) if scheduled."""
        self._maybe_measure(trainer, pl_module)

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Accumulate the learning rate actually used by this step (gradient-flow time)."""
        self.lr_integral += float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Measure after scheduled optimizer steps."""
        self._maybe_measure(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Send W&B the per-head tables and charts not yet sent (rank 0)."""
        if trainer.is_global_zero:
            WandbHeadTables.flush_all(trainer)

    def state_dict(self) -> dict[str, Any]:
        """Return the callback state saved in checkpoints."""
        return {"last_measured_step": self.last_measured_step, "lr_integral": self.lr_integral}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from a checkpoint; the history is cut back to this step at fit start."""
        self.last_measured_step = int(state_dict["last_measured_step"])
        self.lr_integral = float(state_dict["lr_integral"])
        self._restored_step = self.last_measured_step

    # ----------------------------------------------------------------------------- internals
    def _maybe_measure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end on one step: measure it once.
        if step <= self.last_measured_step or not self.should_run(step):
            return
        assert self.probe is not None, "on_fit_start selects the probe set first"
        with (
            progress_status(trainer, f"measuring {self.spec.name} at step {step}"),
            preserved_state(pl_module),
            torch.no_grad(),
        ):
            rows = self.measure(trainer, pl_module, self.probe.to(pl_module.device), step)
        self.last_measured_step = step
        if not trainer.is_global_zero:
            return
        for row in rows:
            row["step"] = step
            row["lr_integral"] = self.lr_integral
        assert self.history is not None
        self.history.append(rows)
        for listener in self._listeners:
            listener(self.spec, rows)
        self.log_measurement(trainer, pl_module, rows, step)

    def _replay_for_wandb(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On resume, hand W&B's per-head tables the rows measured before the checkpoint.

        The rows are passed through :meth:`log_measurement` with every logger muted, so that
        the tables logged after a resume hold the whole run; nothing is logged again.
        """
        if not any(WandbHeadTables.of(logger) is not None for logger in trainer.loggers):
            return
        assert self.history is not None
        by_step: dict[int, list[dict[str, Any]]] = {}
        for row in read_rows(self.history.path).rows:
            by_step.setdefault(int(row["step"]), []).append(_typed(row))
        with replaying(), contextlib.suppress(Exception):
            # (A table short of its early rows is no reason to stop.)
            for step, rows in sorted(by_step.items()):
                self.log_measurement(trainer, pl_module, rows, step)


class preserved_state:  # noqa: N801 - used like a function: `with preserved_state(module):`
    """Context: eval mode and forked RNG inside; train flags and RNG states restored after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.module.modules()]
        devices = [self.module_device()] if self.module_device().type == "cuda" else []
        self.rng = torch.random.fork_rng(devices=devices)
        self.rng.__enter__()
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.flags:
            module.training = training
        self.rng.__exit__(*exc)

    def module_device(self) -> torch.device:
        """Device of the module's first parameter (CPU for a module without parameters)."""
        parameter = next(self.module.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")


def nan_to_none(value: float) -> float | str:
    """CSV-friendly value: NaN becomes an empty cell ("not defined"), not the text 'nan'."""
    return "" if isinstance(value, float) and math.isnan(value) else value


# ------------------------------------------------------------------------------ user messages
def say(trainer: Trainer, message: str) -> None:
    """Show ``message`` on global rank 0, above the progress bar when there is one.

    Through the progress bar's writer when the bar is on (a plain print would land in the bar's
    line), else through Lightning's rank-zero log (INFO, on stderr).
    """
    if not trainer.is_global_zero:
        return
    bar = trainer.progress_bar_callback
    if bar is not None and bar.is_enabled:
        bar.print(message)
    else:
        rank_zero_info(message)


@contextlib.contextmanager
def progress_status(trainer: Trainer, status: str) -> Iterator[None]:
    """Show ``status`` as the progress bar's description while the block runs (rank 0).

    A measurement can take seconds to minutes (the LLC); the bar then says what it is doing
    instead of freezing silently. Only Lightning's own bars (rich and tqdm) are touched, and
    any failure to do so is ignored: the status is a courtesy, never a reason to stop.
    """
    restore: Callable[[], None] | None = None
    with contextlib.suppress(Exception):
        restore = _set_status(trainer, status) if trainer.is_global_zero else None
    try:
        yield
    finally:
        if restore is not None:
            with contextlib.suppress(Exception):
                restore()


def _set_status(trainer: Trainer, status: str) -> Callable[[], None] | None:
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled or not trainer.training:
        return None
    if isinstance(bar, RichProgressBar):
        task = bar.train_progress_bar_id
        if bar.progress is None or task is None:
            return None
        old = bar.progress.tasks[task].description
        bar.progress.update(task, description=f"{old.rstrip()} · {status}")
        bar.refresh(hard=True)

        def restore() -> None:
            if bar.progress is not None:
                bar.progress.update(task, description=old)

        return restore
    if isinstance(bar, TQDMProgressBar) and bar._train_progress_bar is not None:
        tqdm = bar.train_progress_bar
        old = tqdm.desc
        tqdm.set_description_str(f"{old.rstrip(': ')} · {status}")
        return lambda: tqdm.set_description_str(old)
    return None


# ------------------------------------------------------------------------------ W&B workspace
#: A per-head key: a quantity, then ``/L<layer>H<head>`` (or the LLC's ``/l<layer>h<head>``).
HEAD_KEY = re.compile(r"^(?P<quantity>.+)/[Ll](?P<layer>\d+)[Hh](?P<head>\d+)$")
#: Per-head quantities that W&B also shows as one multi-line chart (a line per head), keyed by
#: the quantity. Every per-head quantity is a column of its family's table.
HEADLINE_QUANTITIES: tuple[str, ...] = ("collision/score", "attention_distance/pearson", "llc")


def chart_key(quantity: str) -> str:
    """W&B key of a headline quantity's chart: ``collision/score`` -> ``collision/score_by_head``.

    Always inside its family's section (``llc`` -> ``llc/llc_by_head``).
    """
    family, _, name = quantity.partition("/")
    return f"{family}/{name or family}_by_head"


#: Set while :func:`replaying` (old rows are fed to the tables, nothing is logged).
_replaying = False


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """Within: :meth:`MeasurementCallback.send_scalars` only feeds W&B's head tables.

    For a resumed run, which hands the tables the rows logged before its checkpoint so that
    the tables logged from then on hold the whole run; no logger logs anything (no scalar, no
    image) while it lasts.
    """
    global _replaying
    _replaying = True
    try:
        yield
    finally:
        _replaying = False


class WandbHeadTables:
    """What a W&B logger gets of the per-head scalars: tables and multi-line charts.

    Per family (the first part of the key: ``collision``, ``attention_distance``, ``gauge``,
    ``llc``, ``emergence``) one ``wandb.Table`` ``<family>/heads`` with columns ``step``,
    ``head`` (``L1H6``), ``layer``, ``head_index`` and one per quantity (``score``,
    ``score_band0``, ...; the LLC's is ``llc``), every row measured so far; per quantity of
    :data:`HEADLINE_QUANTITIES` a line-series chart (a line per head) keyed by :func:`chart_key`.
    Both are logged when a measurement falls on ``schedule`` and by :meth:`flush_all` when
    training ends. One instance per W&B logger (:meth:`of`); global rank 0 only.

    Args:
        schedule: Steps at which tables and charts are logged (default 0, 1, 10, 100, ...,
            the figures' schedule).
    """

    _instances: ClassVar[weakref.WeakKeyDictionary[Logger, WandbHeadTables]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, schedule: Schedule | None = None) -> None:
        self.schedule: Schedule = schedule or LogSchedule(points_per_decade=1)
        # family -> (step, layer, head) -> quantity -> value
        self.rows: dict[str, dict[tuple[int, int, int], dict[str, float]]] = {}
        self.pending: set[str] = set()

    @classmethod
    def of(cls, logger: Logger) -> WandbHeadTables | None:
        """The tables of a W&B logger (made on first use); None for any other logger."""
        if not isinstance(logger, WandbLogger):
            return None
        if logger not in cls._instances:
            cls._instances[logger] = cls()
        return cls._instances[logger]

    @classmethod
    def flush_all(cls, trainer: Trainer) -> None:
        """Log every table and chart that has rows not logged yet, at the current step."""
        for logger in trainer.loggers:
            tables = cls.of(logger)
            if tables is not None and tables.pending:
                tables.flush(logger, trainer.global_step)

    def log(self, logger: Logger, metrics: Mapping[str, Any], step: int) -> None:
        """Log the scalars that are not per head; keep the others for the tables."""
        scalars: dict[str, Any] = {}
        touched = False
        for key, value in metrics.items():
            match = HEAD_KEY.match(key)
            if match is None:
                scalars[key] = value
                continue
            family, _, name = match["quantity"].partition("/")
            head = (step, int(match["layer"]), int(match["head"]))
            self.rows.setdefault(family, {}).setdefault(head, {})[name or family] = value
            self.pending.add(family)
            touched = True
        if _replaying:
            return
        if scalars:
            logger.log_metrics(scalars, step=step)
        if touched and self.schedule(step):
            self.flush(logger, step)

    def flush(self, logger: Logger, step: int) -> None:
        """Log the tables and charts of the families with new rows."""
        import wandb

        logged: dict[str, Any] = {}
        for family in sorted(self.pending):
            rows = self.rows[family]
            quantities = sorted({name for values in rows.values() for name in values})
            columns = ["step", "head", "layer", "head_index", *quantities]
            data = [
                [s, head_label(layer, head), layer, head, *(values.get(q) for q in quantities)]
                for (s, layer, head), values in sorted(rows.items())
            ]
            logged[f"{family}/heads"] = wandb.Table(
                columns=columns, data=data, allow_mixed_types=True
            )
            for quantity in HEADLINE_QUANTITIES:
                chart = self._chart(family, quantity, rows)
                if chart is not None:
                    logged[chart_key(quantity)] = chart
        self.pending.clear()
        if logged:
            logger.log_metrics(logged, step=step)

    @staticmethod
    def _chart(
        family: str, quantity: str, rows: Mapping[tuple[int, int, int], Mapping[str, float]]
    ) -> Any:
        """A line per head of one quantity over the steps, or None if it is not this family's."""
        import wandb

        head_family, _, name = quantity.partition("/")
        name = name or head_family
        if head_family != family:
            return None
        series: dict[tuple[int, int], dict[int, float]] = {}
        for (step, layer, head), values in rows.items():
            if values.get(name) not in (None, ""):
                series.setdefault((layer, head), {})[step] = float(values[name])
        if not series:
            return None
        heads = sorted(series)
        return wandb.plot.line_series(
            xs=[sorted(series[h]) for h in heads],
            ys=[[series[h][s] for s in sorted(series[h])] for h in heads],
            keys=[head_label(*h) for h in heads],
            title=f"{quantity} by head",
            xname="step",
        )


def _typed(row: Mapping[str, str]) -> dict[str, Any]:
    """A history row read back from its CSV with numbers as numbers (for a replay)."""
    typed: dict[str, Any] = {}
    for key, text in row.items():
        value: Any = text
        if text in ("True", "False"):
            value = text == "True"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except (TypeError, ValueError):
                    continue
        typed[key] = value
    return typed
