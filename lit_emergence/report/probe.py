"""A run's probe set: the samples the report draws attention on, and the uniform-attention score.

The probe set is the collision monitor's (``emergence/probe_collision_scores.pt``, the very
samples the collision scores were measured on). If that file is gone, it is unavailable unless
``rebuild_probe`` is set (``--rebuild_probe``): then the samples are drawn from the datamodule
rebuilt from ``config.yaml``'s ``data`` section, which re-simulates the run's data (its
trajectory cache is resolved against the current directory and regenerated if missing).

Two samples are drawn on (Figures 1 and 3):

* **free fall** — among the samples whose discs are, on average, in the upper half of the
  probe set's range of mean heights (the pile has not formed), the one with the most contacts
  (ties: the earliest frame), so that there is something colliding to see; the earliest frame
  if none of them has a contact;
* **settled** — the latest frame (the pile).

The **uniform-attention score** is the collision score of a head that attends uniformly to
every other particle (to every particle, self included, for a model that does not mask self),
computed exactly on the probe set with the run's neighbour tolerance: the score's zero point.
``(score − uniform) / (1 − uniform)`` puts it at 0 and a perfect collision head at 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_emergence.functional.collision import collision_score_statistics
from lit_emergence.functional.geometry import neighbour_mask
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import Run

#: The two samples drawn on, in the order of :attr:`ProbeSamples.picks`.
STATES = ("free fall", "settled")
# The collision monitor's default neighbour tolerance (CollisionDetectionMonitor.tolerance).
_DEFAULT_TOLERANCE = 0.25


def collision_monitor_args(run: Run) -> dict[str, Any]:
    """The ``init_args`` of the run's ``CollisionDetectionMonitor`` (empty if it had none)."""
    for callback in run.config.get("trainer", {}).get("callbacks") or []:
        if str(callback.get("class_path", "")).endswith("CollisionDetectionMonitor"):
            return callback.get("init_args") or {}
    return {}


def load_probe(
    run: Run, rebuild_probe: bool = False, warn: Callable[[str], None] | None = None
) -> tuple[dict[str, Tensor], str]:
    """The run's probe set: the saved file, else (if asked) a draw from the rebuilt datamodule.

    Args:
        run: A loaded run.
        rebuild_probe: Without the saved file, re-simulate the run's data from ``config.yaml``.
        warn: Called with one line when the data is re-simulated (default: nothing).

    Returns:
        ``(tensors, source)``: the probe tensors and where they came from, in words.

    Raises:
        Unavailable: Without the file (and without ``rebuild_probe``), or if the datamodule
            cannot be rebuilt.
    """
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
    if warn is not None:
        warn(
            f"{run.name}: no {relative}; re-simulating the run's data from config.yaml "
            "(--rebuild_probe)"
        )
    from lit_emergence.data import ParticleDataModule

    try:
        datamodule = ParticleDataModule(**data_config)
        datamodule.prepare_data()
        datamodule.setup("validate")
    except (TypeError, ValueError, OSError) as error:
        raise Unavailable(f"cannot rebuild the datamodule from config.yaml: {error}") from error
    monitor = collision_monitor_args(run)
    batch = datamodule.probe_batch(
        int(monitor.get("num_probe_samples") or 256), int(monitor.get("probe_seed") or 0)
    )
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return tensors, "a probe draw from the datamodule rebuilt from config.yaml"


def _contact_counts(tensors: dict[str, Tensor]) -> Tensor:
    """Contact pairs per sample: ground truth if the probe has it, else touching discs."""
    contacts = tensors.get("contacts")
    if contacts is None:
        contacts = neighbour_mask(tensors["positions"], tensors["radii"], 0.0, tensors.get("valid"))
    off_diagonal = contacts.bool() & ~torch.eye(contacts.shape[-1], dtype=torch.bool)
    return off_diagonal.flatten(1).sum(dim=1) // 2


@dataclass(frozen=True, eq=False)
class ProbeSamples:
    """The probe set and the two samples drawn on.

    Attributes:
        tensors: Every tensor of the probe set.
        source: Where it came from, in words.
        picks: Index of the free-fall and of the settled sample (:data:`STATES` order).
        contacts: Number of contact pairs in each of the two samples.
        choice: How the free-fall sample was chosen, in words (for captions).
    """

    tensors: dict[str, Tensor]
    source: str
    picks: tuple[int, int]
    contacts: tuple[int, int]
    choice: str

    def batch(self) -> dict[str, Tensor]:
        """The two samples as a batch of 2 (free fall, settled)."""
        index = torch.tensor(self.picks)
        return {key: value[index] for key, value in self.tensors.items()}

    @property
    def frames(self) -> tuple[int, int]:
        """Frame index of the free-fall and of the settled sample."""
        frames = self.tensors["frame"]
        return int(frames[self.picks[0]]), int(frames[self.picks[1]])


def pick_samples(tensors: dict[str, Tensor], source: str = "") -> ProbeSamples:
    """Choose the free-fall and the settled sample of a probe set (see the module docstring).

    Args:
        tensors: The probe set (needs ``features``, ``positions``, ``radii`` and ``frame``).
        source: Where it came from, in words.

    Returns:
        The :class:`ProbeSamples`.

    Raises:
        Unavailable: If the probe set lacks a needed tensor or has no sample.
    """
    missing = [key for key in ("features", "positions", "radii", "frame") if key not in tensors]
    if missing:
        raise Unavailable(f"the probe samples lack {missing}")
    frames = tensors["frame"].long()
    if frames.numel() == 0:
        raise Unavailable("the probe set has no sample")
    heights = tensors["positions"][..., 1].float()
    valid = tensors.get("valid")
    if valid is not None:
        heights = (heights * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    else:
        heights = heights.mean(dim=1)
    counts = _contact_counts(tensors)
    settled = int(torch.argmax(frames))  # the first of the latest frames
    aloft = heights >= 0.5 * (heights.min() + heights.max())
    candidates = torch.nonzero(aloft & (counts > 0)).flatten()
    if candidates.numel():
        # Most contacts, then the earliest frame: lexicographic through one integer key.
        key = counts[candidates] * (int(frames.max()) + 1) - frames[candidates]
        free_fall = int(candidates[torch.argmax(key)])
        choice = (
            f"the sample with the most contacts ({int(counts[free_fall])}) among those whose "
            "discs are on average in the upper half of the probe set's height range"
        )
    else:
        free_fall = int(torch.argmin(frames))
        choice = "the earliest frame (no sample with its discs still aloft has a contact)"
    return ProbeSamples(
        tensors=tensors,
        source=source,
        picks=(free_fall, settled),
        contacts=(int(counts[free_fall]), int(counts[settled])),
        choice=choice,
    )


def uniform_score(run: Run, tensors: dict[str, Tensor]) -> float:
    """The collision score of uniform attention on the probe set (the score's zero point).

    Uses the run's neighbour ``tolerance`` (its collision monitor's, default 0.25) and whether
    its model masks self (``model.mask_self``, default true).

    Args:
        run: The run (for its settings).
        tensors: Its probe set (``positions``, ``radii``, optionally ``valid``).

    Returns:
        The score, NaN if no probe query has a neighbour.
    """
    positions, radii = tensors["positions"].double(), tensors["radii"].double()
    valid = tensors.get("valid")
    batch, num = radii.shape
    tolerance = float(collision_monitor_args(run).get("tolerance") or _DEFAULT_TOLERANCE)
    mask_self = bool((run.config.get("model") or {}).get("mask_self", True))
    keys = torch.ones(batch, num, num, dtype=torch.float64)
    if valid is not None:
        keys = keys * valid[:, None, :].double()
    if mask_self:
        keys = keys * (1.0 - torch.eye(num, dtype=torch.float64))
    attention = keys / keys.sum(dim=-1, keepdim=True).clamp(min=1.0)
    pairs = neighbour_mask(positions, radii, tolerance, valid)
    statistics = collision_score_statistics(attention[:, None, None], pairs, valid=valid)
    count = float(statistics.count.item())
    return float(statistics.sum_mass.item()) / count if count > 0 else math.nan


def above_uniform(score: float, uniform: float) -> float:
    """``(score − uniform) / (1 − uniform)``: 0 for uniform attention, 1 for a perfect head."""
    return (score - uniform) / (1.0 - uniform) if uniform < 1.0 else math.nan
