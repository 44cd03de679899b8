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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet, select_probe_set
from lit_emergence.callbacks.protocol import SHARED_ATTENTION
from lit_emergence.records.csv import CSVHistory
from lit_emergence.records.schema import EMERGENCE_DIR, HistorySpec

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
        """Log scalars to every logger at an explicit step (rank 0 only)."""
        for logger in trainer.loggers:
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
        with preserved_state(pl_module), torch.no_grad():
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
