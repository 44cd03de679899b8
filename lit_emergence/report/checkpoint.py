"""Loading a run's checkpoint as a model, for the parts of the report that need one.

Figure 3 (:mod:`.attention`) and the head alignment (:mod:`.alignment`) both need a run's
model; :class:`CheckpointCache` lets them share one load per checkpoint file and report.
Figure 1's attention at one step in each phase of a head needs the model at earlier steps:
the run's scheduled checkpoints (:func:`scheduled_checkpoints`).
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import Run
from lit_emergence.records.schema import (
    CHECKPOINT_DIR,
    SCHEDULED_CHECKPOINT_GLOB,
    scheduled_checkpoint_step,
)

if TYPE_CHECKING:
    from lit_emergence.module import LearnedSimulator

# What torch.load and building the module raise on a missing, truncated or foreign file.
_LOAD_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    RuntimeError,
    KeyError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A run's checkpoint, read once.

    Attributes:
        path: The checkpoint file.
        module: The model it holds, on CPU and in eval mode.
        step: The optimizer step it was saved at (its ``global_step``).
    """

    path: Path
    module: LearnedSimulator
    step: int


def _module_from(contents: dict[str, Any]) -> LearnedSimulator:
    """Build the module from a loaded checkpoint as ``LearnedSimulator.load_from_checkpoint`` does.

    Lightning's own steps after its ``torch.load``: migrate an older checkpoint, then
    ``_load_state`` (hyperparameters through the LightningCLI instantiator when the checkpoint
    names one, ``on_load_checkpoint``, which restores the feature normaliser, and a strict
    ``load_state_dict``). ``_load_state`` is private; the report's tests compare the result
    with ``load_from_checkpoint``'s tensor by tensor.
    """
    from lightning.pytorch.core.saving import _load_state
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    from lit_emergence.module import LearnedSimulator

    contents, _ = migrate_checkpoint(contents)
    contents.setdefault(LearnedSimulator.CHECKPOINT_HYPER_PARAMS_KEY, {})
    return cast("LearnedSimulator", _load_state(LearnedSimulator, contents))


def load_checkpoint(run: Run) -> Checkpoint:
    """Read the run's checkpoint once: its model (on CPU, eval mode) and its step.

    Args:
        run: A loaded run.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        Unavailable: Without a checkpoint, or if it cannot be loaded.
    """
    if run.checkpoint is None:
        raise Unavailable("no checkpoint in checkpoints/")
    # Lightning only when a model is needed.
    from lightning.pytorch.utilities.migration import pl_legacy_patch

    try:
        with pl_legacy_patch():  # as load_from_checkpoint: old pickled Lightning classes
            contents = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
        module = _module_from(contents)
        # The step is not a hyperparameter: it is a top-level entry of the checkpoint.
        step = int(contents["global_step"])
    except _LOAD_ERRORS as error:
        raise Unavailable(f"cannot load {run.checkpoint.name}: {error}") from error
    return Checkpoint(path=run.checkpoint, module=module.eval(), step=step)


def scheduled_checkpoints(run: Run) -> dict[int, Path]:
    """The run's scheduled checkpoints (``checkpoints/step-XXXXXXX.ckpt``) by step, ascending."""
    folder = run.path / CHECKPOINT_DIR
    found = {scheduled_checkpoint_step(p): p for p in folder.glob(SCHEDULED_CHECKPOINT_GLOB)}
    return {step: found[step] for step in sorted(s for s in found if s is not None)}


class CheckpointCache:
    """Each checkpoint file of a report loaded at most once, failures included.

    Keyed by the resolved file, so a run directory given twice is read once as well. The
    cached modules are shared: callers must not change them (compute under ``no_grad``).
    """

    def __init__(self) -> None:
        self._loaded: dict[Path, Checkpoint | Unavailable] = {}

    def get(self, run: Run, path: Path | None = None) -> Checkpoint:
        """The run's checkpoint (or another of its checkpoints), loaded on first request.

        Args:
            run: A loaded run.
            path: One of the run's checkpoint files (e.g. a scheduled one), default
                ``run.checkpoint``.

        Returns:
            The :class:`Checkpoint`.

        Raises:
            Unavailable: Without a checkpoint, or if it cannot be loaded (the same reason on
                every request).
        """
        if path is not None:
            run = dataclasses.replace(run, checkpoint=path)
        if run.checkpoint is None:
            raise Unavailable("no checkpoint in checkpoints/")
        key = run.checkpoint.resolve()
        if key not in self._loaded:
            try:
                self._loaded[key] = load_checkpoint(run)
            except Unavailable as reason:
                self._loaded[key] = reason
        loaded = self._loaded[key]
        if isinstance(loaded, Unavailable):
            raise Unavailable(str(loaded)) from loaded.__cause__
        return loaded
