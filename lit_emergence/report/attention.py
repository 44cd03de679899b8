"""Attention of a checkpoint on the two probe samples: particles in free fall and settled.

Figures 1 and 3 draw it (the head alignment, :mod:`.alignment`, is the other part that loads a
model). The samples and how they are chosen are :mod:`.probe`'s: the run's saved probe set (the
very samples the collision scores were measured on), a free-fall sample with contacts and the
settled pile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lit_emergence.records.run import Run
from lit_emergence.report.checkpoint import CheckpointCache
from lit_emergence.report.probe import STATES, ProbeSamples

__all__ = ["STATES", "AttentionSnapshot", "attention_snapshot"]


@dataclass(frozen=True, eq=False)
class AttentionSnapshot:
    """Every head's attention on the free-fall and the settled sample, at one checkpoint.

    Attributes:
        step: Optimizer step of the checkpoint.
        frames: (2,) frame index of the free-fall and the settled sample.
        positions: (2, N, 2) disc centres.
        radii: (2, N) disc radii.
        contacts: (2, N, N) ground-truth contacts, or ``None`` if the probe lacks them.
        attention: (2, L, H, N, N) attention of query i on key j.
        samples: The probe samples (their source and how they were chosen).
    """

    step: int
    frames: np.ndarray
    positions: np.ndarray
    radii: np.ndarray
    contacts: np.ndarray | None
    attention: np.ndarray
    samples: ProbeSamples


def attention_snapshot(
    run: Run,
    samples: ProbeSamples,
    checkpoints: CheckpointCache | None = None,
    checkpoint: Path | None = None,
) -> AttentionSnapshot:
    """Compute every head's attention on the two samples, at one of the run's checkpoints.

    Args:
        run: A run with a checkpoint.
        samples: Its probe samples (:func:`lit_emergence.report.probe.pick_samples`).
        checkpoints: The report's checkpoints, shared with the head alignment (default: a
            fresh cache, i.e. the checkpoint is read here).
        checkpoint: Which checkpoint file (e.g. a scheduled one), default the run's own
            (``last.ckpt`` preferred).

    Returns:
        The :class:`AttentionSnapshot`.

    Raises:
        Unavailable: Without a checkpoint, or if it cannot be loaded.
    """
    loaded = (CheckpointCache() if checkpoints is None else checkpoints).get(run, checkpoint)
    batch = samples.batch()
    with torch.no_grad():
        attention = loaded.module.probe_attention(batch).float()
    return AttentionSnapshot(
        step=loaded.step,
        frames=batch["frame"].numpy(),
        positions=batch["positions"].float().numpy(),
        radii=batch["radii"].float().numpy(),
        contacts=batch["contacts"].numpy() if "contacts" in batch else None,
        attention=attention.numpy(),
        samples=samples,
    )
