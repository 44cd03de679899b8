"""Learning-rate schedules (when to measure is :mod:`lit_emergence.callbacks.measurement_schedule`).

A linear warm-up followed by a cosine decay, the schedule of the quickstart and paper configs.
It is a plain :class:`~torch.optim.lr_scheduler.LRScheduler`, so it is configured from YAML like any
other scheduler::

    model:
      scheduler:
        class_path: lit_emergence.lr_schedules.WarmupCosineLR
        init_args: {warmup_steps: 100}

``total_steps`` may be left unset: :class:`~lit_emergence.module.LearnedSimulator` fills it in
from the trainer's step budget, so ``trainer.max_steps`` is the one place it is written.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from 0 to the base learning rate, then a cosine decay.

    The multiplier at step ``s`` is ``s / warmup_steps`` during warm-up, then
    ``f + (1 - f) * (1 + cos(pi * p)) / 2`` with ``p`` the fraction of the decay phase done and
    ``f = final_lr_fraction``. After ``total_steps`` it stays at ``f``.

    Args:
        optimizer: The wrapped optimizer.
        warmup_steps: Number of warm-up steps (0 for none).
        total_steps: Steps until the end of the decay. ``None`` means "set later": the module
            assigns :attr:`total_steps` from ``trainer.estimated_stepping_batches`` before the
            first step; stepping while it is still unset raises.
        final_lr_fraction: Learning rate at the end of the decay, as a fraction of the base rate.
        last_epoch: Index of the last step (for resuming; the Lightning checkpoint restores it).

    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 100,
        total_steps: int | None = None,
        final_lr_fraction: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(
                f"total_steps must be >= 1 (or null to use trainer.max_steps), got {total_steps}"
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.final_lr_fraction = final_lr_fraction
        super().__init__(optimizer, last_epoch)

    def lr_multiplier(self, step: int) -> float:
        """Return the factor applied to the base learning rate at optimizer step ``step``."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        # Before the module has filled in the budget (the scheduler's own construction calls
        # this once at step 0) the decay phase is treated as not yet started.
        total = self.total_steps if self.total_steps is not None else step + 1
        decay_steps = max(total - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_lr_fraction + (1.0 - self.final_lr_fraction) * cosine

    def get_lr(self) -> list[float]:
        """Learning rates for the current step (called by ``LRScheduler.step``)."""
        if self.total_steps is None and self.last_epoch > 0:
            raise RuntimeError(
                "WarmupCosineLR.total_steps is unset: set it in the config "
                "or train with trainer.max_steps"
            )
        factor = self.lr_multiplier(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]
