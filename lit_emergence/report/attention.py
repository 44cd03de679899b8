"""Attention of a trained checkpoint on two probe samples: particles in free fall and settled.

Figure 3's part of the report (the head alignment, :mod:`.alignment`, is the other part that
loads a model). The samples come from the run's saved probe set
(``emergence/probe_collision_scores.pt``, the very samples the collision scores were measured
on). If that file is gone, Figure 3 is unavailable unless ``rebuild_probe`` is set
(``--rebuild_probe``): then the samples are drawn from the datamodule rebuilt from
``config.yaml``'s ``data`` section, which re-simulates the run's data (its trajectory cache is
resolved against the current directory and regenerated if missing). As in
:class:`~lit_emergence.callbacks.CollisionDetectionMonitor`'s pictures, the free-fall sample
is the earliest frame of the probe set and the settled one the latest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import Run
from lit_emergence.report.checkpoint import CheckpointCache

STATES = ("free fall", "settled")


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
        probe_source: Where the samples came from, in words.
    """

    step: int
    frames: np.ndarray
    positions: np.ndarray
    radii: np.ndarray
    contacts: np.ndarray | None
    attention: np.ndarray
    probe_source: str


def _collision_monitor_args(run: Run) -> dict[str, Any]:
    for callback in run.config.get("trainer", {}).get("callbacks") or []:
        if str(callback.get("class_path", "")).endswith("CollisionDetectionMonitor"):
            return callback.get("init_args") or {}
    return {}


def _probe_tensors(
    run: Run, rebuild_probe: bool, warn: Callable[[str], None]
) -> tuple[dict[str, torch.Tensor], str]:
    """The run's probe set: the saved file, else (if asked) a draw from the rebuilt datamodule."""
    if run.probe_path.is_file():
        tensors = torch.load(run.probe_path, map_location="cpu", weights_only=True)
        return tensors, f"the run's probe set ({run.probe_path.name})"
    relative = run.probe_path.relative_to(run.path)
    if not rebuild_probe:
        # Re-simulating can take long, and gives the scores' samples only if it reproduces the
        # run's data: never done unasked.
        raise Unavailable(
            f"no probe set ({relative}); pass --rebuild_probe to re-simulate the run's data "
            "from config.yaml"
        )
    data_config = run.config.get("data")
    if not data_config:
        raise Unavailable(f"no {run.probe_path.name} and no data section in config.yaml")
    warn(
        f"{run.name}: Figure 3: no {relative}; re-simulating the run's data from config.yaml "
        "(--rebuild_probe)"
    )
    from lit_emergence.data import ParticleDataModule

    try:
        datamodule = ParticleDataModule(**data_config)
        datamodule.prepare_data()
        datamodule.setup("validate")
    except (TypeError, ValueError, OSError) as error:
        raise Unavailable(f"cannot rebuild the datamodule from config.yaml: {error}") from error
    monitor = _collision_monitor_args(run)
    batch = datamodule.probe_batch(
        int(monitor.get("num_probe_samples") or 256), int(monitor.get("probe_seed") or 0)
    )
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return tensors, "a probe draw from the datamodule rebuilt from config.yaml"


def attention_snapshot(
    run: Run,
    checkpoints: CheckpointCache | None = None,
    *,
    rebuild_probe: bool = False,
    warn: Callable[[str], None] | None = None,
) -> AttentionSnapshot:
    """Compute every head's attention on the two samples, at the run's checkpoint.

    Args:
        run: A run with a checkpoint.
        checkpoints: The report's checkpoints, shared with the head alignment (default: a
            fresh cache, i.e. the checkpoint is read here).
        rebuild_probe: Without the run's saved probe set, re-simulate its data from
            ``config.yaml`` and draw the samples from that (off: Figure 3 is unavailable).
        warn: Called with one line when the data is re-simulated (default: nothing).

    Returns:
        The :class:`AttentionSnapshot`.

    Raises:
        Unavailable: Without a checkpoint, if it cannot be loaded, or without probe samples.
    """
    checkpoint = (CheckpointCache() if checkpoints is None else checkpoints).get(run)
    module = checkpoint.module
    tensors, source = _probe_tensors(run, rebuild_probe, warn or (lambda message: None))
    missing = [key for key in ("features", "positions", "radii", "frame") if key not in tensors]
    if missing:
        raise Unavailable(f"the probe samples lack {missing}")
    frames = tensors["frame"]
    picks = torch.stack([frames.argmin(), frames.argmax()])
    batch = {key: value[picks] for key, value in tensors.items()}
    with torch.no_grad():
        attention = module.probe_attention(batch).float()
    return AttentionSnapshot(
        step=checkpoint.step,
        frames=batch["frame"].numpy(),
        positions=batch["positions"].float().numpy(),
        radii=batch["radii"].float().numpy(),
        contacts=batch["contacts"].numpy() if "contacts" in batch else None,
        attention=attention.numpy(),
        probe_source=source,
    )
