"""Checkpoints at log-spaced steps, so instruments can be run on a finished run afterwards.

Lightning's ``ModelCheckpoint`` saves every ``n`` steps; emergence happens on a logarithmic
clock (a head can specialise between steps 200 and 400 of 10 000), so measurements made
after training — e.g. a dense LLC over a head's emergence window with ``lit-emergence llc``
— need checkpoints at log-spaced steps. :class:`ScheduledCheckpoint` saves
``RUN_DIR/checkpoints/step-<step>.ckpt`` at the steps of a
:class:`~lit_emergence.callbacks.LogSchedule` (step 0, the untrained model, included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_emergence.callbacks.base import Schedule
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.records.schema import CHECKPOINT_DIR, SCHEDULED_CHECKPOINT

__all__ = ["ScheduledCheckpoint"]


class ScheduledCheckpoint(Callback):
    """Save a checkpoint after every scheduled optimizer step.

    Saving goes through ``trainer.save_checkpoint`` (every rank calls it; rank 0 writes,
    through the run's checkpoint I/O, so a failed write stops the run in one line). A step
    whose file already exists (a resumed run) is not written again.

    Args:
        schedule: ``step -> bool``; default ``LogSchedule(points_per_decade=10)``, about 40
            checkpoints over 10 000 steps.
        weights_only: Save the weights without optimizer and loop state (about a third of the
            size; enough for offline measurements, not for resuming).
    """

    def __init__(self, schedule: Schedule | None = None, weights_only: bool = True) -> None:
        self.schedule: Schedule = (
            schedule if schedule is not None else LogSchedule(points_per_decade=10)
        )
        self.weights_only = weights_only

    def path(self, trainer: Trainer, step: int) -> Path:
        """Where the checkpoint of ``step`` goes."""
        return (
            Path(trainer.default_root_dir) / CHECKPOINT_DIR / SCHEDULED_CHECKPOINT.format(step=step)
        )

    def _save(self, trainer: Trainer) -> None:
        step = trainer.global_step
        if not self.schedule(step):
            return
        path = self.path(trainer, step)
        # Every rank must take the same branch (saving is a collective under DDP).
        exists = trainer.strategy.broadcast(path.is_file())
        if not exists:
            trainer.save_checkpoint(path, weights_only=self.weights_only)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the untrained model (step 0) when scheduled."""
        self._save(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save after a scheduled optimizer step."""
        self._save(trainer)
