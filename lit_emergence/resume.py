"""Resuming a run exactly: what a checkpoint says, random state, and logs that continue.

A run killed at any point and resumed from one of its checkpoints continues as if it had never
stopped. The pieces here complete what Lightning restores by itself (weights, optimizer,
schedulers, loop counters, callback states, and the position of a stateful training loader,
:class:`~lit_emergence.data.batches.TrainBatchLoader`):

* :func:`read_resume_point` reads a checkpoint before any work starts, so a missing or
  truncated file is a one-line error, and says where the run stopped;
* :class:`RandomStateCheckpoint` stores the global random states (torch, CUDA, numpy, Python)
  in every checkpoint and restores them, so dropout or any other random draw continues as it
  would have;
* :class:`RunCSVLogger` writes ``csv/metrics.csv`` row by row (nothing is buffered, so a
  SIGKILL loses no row), tags each row with the training batch during which it was logged
  (column ``train_batch``; 0 before the first batch), and on resume keeps the rows of the
  batches up to the checkpoint and drops the rest, which the resumed run logs again;
* :class:`SafeCheckpointIO` writes each checkpoint to a temporary file beside it, fsyncs it
  and moves it into place, and raises when that fails (Lightning's own writer, through
  ``fsspec``, can fail silently on a folder it cannot write, and the run goes on without
  checkpoints);
* :func:`wandb_run_id` and :func:`save_wandb_run_id` give a run directory one W&B run id for
  life, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import random
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lit_emergence.records.csv import read_rows
from lit_emergence.records.files import append_text, named_failures, replace_text, replaced

#: Column of ``metrics.csv`` with the training batch during which a row was logged.
BATCH_COLUMN = "train_batch"
#: File in the run directory holding its W&B run id.
WANDB_ID_FILE = "wandb-run-id"


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint left a run.

    Attributes:
        path: The checkpoint file.
        global_step: Optimizer steps done.
        batches: Training batches started (Lightning's ``batch_progress.total.ready``).
    """

    path: Path
    global_step: int
    batches: int


def read_resume_point(path: str | os.PathLike) -> ResumePoint:
    """Read a checkpoint's position, checking that the file is a whole Lightning checkpoint.

    Args:
        path: The checkpoint file.

    Returns:
        The :class:`ResumePoint`.

    Raises:
        ValueError: One line naming the file and what is wrong with it (missing, a directory,
            truncated or not a checkpoint, a checkpoint without training state).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is not a file")
    try:
        # mmap: only the few small entries read below are paged in, not the weights.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"cannot read checkpoint {path} (truncated, or not a checkpoint: {reason}); "
            "resume from another file in its checkpoints/ folder"
        ) from None
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
        return ResumePoint(path, int(checkpoint["global_step"]), int(progress["ready"]))
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint {path} holds no training state (missing {error}); it cannot resume a run"
        ) from None


class RandomStateCheckpoint(Callback):
    """Save the global random states in every checkpoint and restore them on resume.

    The torch CPU generator, every initialised CUDA device's, numpy's global generator and
    Python's ``random``. Under DDP every rank seeds alike and draws alike, so the saving
    rank's states are every rank's.
    """

    def state_dict(self) -> dict[str, Any]:
        """The random states now."""
        # Plain tensors, ints and tuples only: Lightning loads checkpoints with weights_only.
        _, keys, position, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the random states of the checkpoint."""
        torch.set_rng_state(state_dict["torch"])
        keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state(
            ("MT19937", keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(gauss))
        )
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all, and a write that fails stops the run.

    The checkpoint is saved to ``.<name>.tmp`` in its folder, flushed to the disk, then moved
    over the old file in one step: a crash or a full disk mid-write leaves the previous
    checkpoint intact. A failure raises an :class:`OSError` naming the checkpoint's path.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        path = Path(path)
        with named_failures(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        with replaced(path, "wb") as handle:
            torch.save(checkpoint, handle)


class _RowByRowWriter(ExperimentWriter):
    """Lightning's metrics writer, writing each row as it is logged and continuing a file."""

    def __init__(self, log_dir: str, keep_batches: int | None) -> None:
        self._keep_batches = keep_batches
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_batches is None or not path.is_file():
            super()._check_log_dir_exists()  # a fresh run: an old file is replaced
            return
        found = read_rows(path)
        kept = [row for row in found.rows if _batch_of(row) <= self._keep_batches]
        self.metrics_keys = list(found.fieldnames)
        self._write_all(kept)

    def save(self) -> None:
        """Append the rows logged since the last call (rewriting the file for new columns)."""
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new_keys = self._record_new_keys()
        if new_keys or not path.is_file():
            rows = read_rows(path).rows if path.is_file() else []
            self._write_all([*rows, *self.metrics])
        else:
            append_text(path, self._render(self.metrics))
        self.metrics = []

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file atomically with ``rows`` under the current header."""
        replace_text(self.metrics_file_path, self._render(rows, header=True))

    def _render(self, rows: list[dict[str, Any]], header: bool = False) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.metrics_keys)
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


def _batch_of(row: dict[str, str]) -> int:
    """The training batch of a ``metrics.csv`` row (rows of older files count as batch 0)."""
    try:
        return int(row.get(BATCH_COLUMN) or 0)
    except ValueError:
        return 0


class RunCSVLogger(CSVLogger):
    """``csv/metrics.csv`` that loses no row to a crash and continues on resume.

    Args:
        save_dir: The run directory.
        resume: Where the run resumes from (rows of later batches are dropped), or ``None``
            for a fresh run (an old file is replaced).
        **kwargs: Other :class:`~lightning.pytorch.loggers.CSVLogger` arguments.
    """

    def __init__(
        self, save_dir: str | os.PathLike, resume: ResumePoint | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "csv")
        kwargs.setdefault("version", "")
        kwargs["flush_logs_every_n_steps"] = 1  # every row reaches the disk as it is logged
        super().__init__(save_dir=save_dir, **kwargs)
        self.resume = resume
        self._trainer: Trainer | None = None

    def bind(self, trainer: Trainer) -> None:
        """Read the training batch of each row from ``trainer``'s loop."""
        self._trainer = trainer

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The row-by-row writer (created on first use, rank 0 only)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            keep = self.resume.batches if self.resume is not None else None
            self._experiment = _RowByRowWriter(log_dir=self.log_dir, keep_batches=keep)
        return self._experiment

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log a row, tagged with the training batch it belongs to."""
        trainer = self._trainer
        batch = 0 if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.total.ready
        super().log_metrics({**metrics, BATCH_COLUMN: batch}, step)


def wandb_run_id(run_dir: str | os.PathLike) -> str:
    """The run directory's W&B run id: the stored one, else a new one (not stored yet)."""
    path = Path(run_dir) / WANDB_ID_FILE
    stored = path.read_text().strip() if path.is_file() else ""
    # Not the global random state: naming a run must not shift the training seed stream.
    return stored or secrets.token_hex(4)


def save_wandb_run_id(run_dir: str | os.PathLike, run_id: str) -> None:
    """Store the run directory's W&B run id (atomically; kept if already there)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip() == run_id:
        return
    replace_text(path, run_id + "\n")
