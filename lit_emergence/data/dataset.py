"""Map-style datasets over cached trajectories: one-step samples and rollout windows.

Both datasets implement ``__getitems__``, so the DataLoader fetches a whole batch with one
vectorised gather and :func:`passthrough_collate` hands the result on unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from lit_emergence.data.arrays import TrajectoryArrays
from lit_emergence.data.normalize import FeatureNormalizer

# Distinguishes the augmentation stream from any other stream derived from the same seed.
_AUGMENTATION_STREAM = 0x6D6972  # "mir"


def passthrough_collate(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batch."""
    return batch


def augmentation_rng(seed: int, rank: int, worker_id: int | None) -> np.random.Generator:
    """Create the augmentation stream of one data-loading process.

    Args:
        seed: Data seed.
        rank: Global rank of the training process.
        worker_id: DataLoader worker id, or None for the main process.

    Returns:
        A generator no other (rank, worker) pair shares.

    """
    worker_slot = 0 if worker_id is None else worker_id + 1
    return np.random.default_rng([seed, _AUGMENTATION_STREAM, rank, worker_slot])


def _unbatch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return the single sample of a batch of one."""
    return {name: value[0] for name, value in batch.items()}


class OneStepDataset(Dataset):
    """Samples ``(state at frame t) -> (velocity change from t to t+1)``.

    Sample ``i`` is scene ``i // P``, frame ``t = history + i % P`` with
    ``P = T - 1 - history`` samples per trajectory (a sample needs ``history`` earlier
    frames and the next one).

    A batch (from ``__getitems__``) is a dict of tensors:

    - ``features`` float32 (B, N, F) normalised inputs; ``target`` float32 (B, N, 2)
    - ``positions``, ``velocities`` float32 (B, N, 2) raw state at frame t
    - ``past_velocities`` float32 (B, history, N, 2) raw velocities before t, oldest first
    - ``radii`` float32 (B, N); ``contacts`` bool (B, N, N) contacts during t -> t+1
    - ``index`` int64 (B,) sample id; ``frame`` int64 (B,) frame t
    - ``mirrored`` bool (B,) whether the mirror-x augmentation was applied

    With ``mirror_augment`` each sample is mirrored about the box's vertical centre line
    with probability 1/2 (``x -> box_width - x``, ``vx -> -vx``, ``dvx -> -dvx``; contacts
    unchanged). The random stream is created lazily in the process that loads the data and
    seeded from ``(seed, rank, worker id)``, so ranks and workers never share a stream and
    the global random state is never used. The stream continues across epochs as long as
    the process lives (use persistent workers).

    Args:
        arrays: The split's trajectories.
        normalizer: Normaliser fitted on the training split.
        history: Previous velocities among the inputs.
        box_width: Width of the box (the mirror line is ``box_width / 2``).
        mirror_augment: Apply the random mirror-x augmentation (training split only).
        seed: Data seed for the augmentation stream.
        rank: Global rank of the process (see :meth:`set_rank`).

    """

    def __init__(
        self,
        arrays: TrajectoryArrays,
        normalizer: FeatureNormalizer,
        *,
        history: int = 0,
        box_width: float,
        mirror_augment: bool = False,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not 0 <= history <= arrays.num_frames - 2:
            raise ValueError(
                f"history must be in [0, num_frames - 2 = {arrays.num_frames - 2}], got {history}"
            )
        self.arrays = arrays
        self.normalizer = normalizer
        self.history = history
        self.box_width = float(box_width)
        self.mirror_augment = mirror_augment
        self.seed = seed
        self.rank = rank
        self.samples_per_trajectory = arrays.num_frames - 1 - history
        self._rng: np.random.Generator | None = None

    def set_rank(self, rank: int) -> None:
        """Set the global rank that seeds the augmentation stream (restarts the stream)."""
        self.rank = rank
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        """Augmentation stream of the current process, created on first use."""
        if self._rng is None:
            worker = get_worker_info()
            worker_id = None if worker is None else worker.id
            self._rng = augmentation_rng(self.seed, self.rank, worker_id)
        return self._rng

    def __len__(self) -> int:
        return self.arrays.num_scenes * self.samples_per_trajectory

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return _unbatch(self.__getitems__([index]))

    def __getitems__(self, indices: Sequence[int], augment: bool = True) -> dict[str, Tensor]:
        index = np.asarray(indices, dtype=np.int64)  # (B,)
        if index.ndim != 1 or ((index < 0) | (index >= len(self))).any():
            raise IndexError(f"sample indices must lie in [0, {len(self)})")
        if self.mirror_augment and augment:
            mirrored = self.rng.random(len(index)) < 0.5  # (B,)
        else:
            mirrored = np.zeros(len(index), dtype=bool)
        arrays = self.arrays
        batch = one_step_batch(
            torch.from_numpy(arrays.positions),
            torch.from_numpy(arrays.velocities),
            torch.from_numpy(arrays.radii),
            self.normalizer,
            torch.from_numpy(index),
            torch.from_numpy(mirrored),
            history=self.history,
            box_width=self.box_width,
        )
        scene = index // self.samples_per_trajectory
        batch["contacts"] = torch.from_numpy(arrays.contacts(scene, batch["frame"].numpy()))
        return batch


def one_step_batch(
    positions: Tensor,
    velocities: Tensor,
    radii: Tensor,
    normalizer: FeatureNormalizer,
    index: Tensor,
    mirrored: Tensor,
    *,
    history: int,
    box_width: float,
) -> dict[str, Tensor]:
    """Gather one-step samples from a split's trajectories and mirror the flagged ones.

    Plain torch indexing with no host synchronisation, so the same code builds CPU batches
    (:class:`OneStepDataset`) and batches on the training device
    (:class:`~lit_emergence.data.batches.TrainBatchLoader`).

    Args:
        positions: float32 (S, T, N, 2) positions of the split.
        velocities: float32 (S, T, N, 2) velocities of the split.
        radii: float32 (S, N) radii of the split.
        normalizer: Normaliser on the device of the arrays (or on CPU).
        index: int64 (B,) sample ids (see :class:`OneStepDataset`), on the arrays' device.
        mirrored: bool (B,) which samples to mirror about the vertical centre line.
        history: Previous velocities among the inputs.
        box_width: Width of the box (the mirror line is ``box_width / 2``).

    Returns:
        The batch of :class:`OneStepDataset` without ``contacts``.

    """
    samples_per_trajectory = positions.shape[1] - 1 - history
    scene = index // samples_per_trajectory
    frame = history + index % samples_per_trajectory
    state_positions = positions[scene, frame]  # (B, N, 2)
    state_velocities = velocities[scene, frame]  # (B, N, 2)
    change = velocities[scene, frame + 1] - state_velocities  # (B, N, 2)
    past_frames = frame[:, None] + torch.arange(-history, 0, device=index.device)  # (B, history)
    past_velocities = velocities[scene[:, None], past_frames]  # (B, history, N, 2)
    # torch.where, not boolean indexing: a data-dependent shape would sync with the GPU.
    flip = mirrored[:, None, None] & (torch.arange(2, device=index.device) == 0)  # (B, 1, 2)
    state_positions = torch.where(flip, box_width - state_positions, state_positions)
    state_velocities = torch.where(flip, -state_velocities, state_velocities)
    change = torch.where(flip, -change, change)
    past_velocities = torch.where(flip[:, None], -past_velocities, past_velocities)
    sample_radii = radii[scene]  # (B, N)
    return {
        "features": normalizer.features(
            state_positions, state_velocities, sample_radii, past_velocities
        ),
        "target": normalizer.normalize_target(change),
        "positions": state_positions,
        "velocities": state_velocities,
        "past_velocities": past_velocities,
        "radii": sample_radii,
        "index": index,
        "frame": frame,
        "mirrored": mirrored,
    }


def rollout_start_frames(num_frames: int, history: int, horizon: int, count: int) -> np.ndarray:
    """``count`` distinct start frames spread evenly over a trajectory.

    The first start is ``history`` (free fall, just after release) and the last is
    ``num_frames - 1 - horizon`` (the latest start whose window fits, usually a settled
    pile), so both regimes are represented.

    Args:
        num_frames: T, frames per trajectory.
        history: Frames needed before a start.
        horizon: H, frames predicted after a start.
        count: Number of starts; at most ``num_frames - history - horizon``.

    Returns:
        int64 (count,) increasing start frames.

    """
    last = num_frames - 1 - horizon
    if horizon < 1 or last < history:
        raise ValueError(
            f"a rollout horizon of {horizon} with history={history} does not fit in "
            f"num_frames={num_frames}; need 1 <= horizon <= num_frames - 1 - history"
        )
    if not 1 <= count <= last - history + 1:
        raise ValueError(
            f"rollout_starts must be in [1, {last - history + 1}] for num_frames={num_frames}, "
            f"history={history} and horizon={horizon}, got {count}"
        )
    return np.round(np.linspace(history, last, count)).astype(np.int64)


class RolloutDataset(Dataset):
    """Ground-truth windows for autoregressive rollouts.

    Item ``i`` is scene ``i // K`` from start frame ``starts[i % K]`` (``K`` starts per
    trajectory, see :func:`rollout_start_frames`). A batch is a dict of tensors:

    - ``positions``, ``velocities`` float32 (B, H+1, N, 2): frames ``t0 .. t0+H``
    - ``past_velocities`` float32 (B, history, N, 2): frames ``t0-history .. t0-1``
    - ``radii`` float32 (B, N); ``index`` int64 (B,); ``frame`` int64 (B,) start frame t0

    Args:
        arrays: The split's trajectories (validation or test).
        history: Previous velocities the model needs.
        horizon: H, the longest rollout.
        starts_per_trajectory: K, start frames per trajectory.

    """

    def __init__(
        self, arrays: TrajectoryArrays, *, history: int, horizon: int, starts_per_trajectory: int
    ) -> None:
        self.arrays = arrays
        self.history = history
        self.horizon = horizon
        self.starts = rollout_start_frames(
            arrays.num_frames, history, horizon, starts_per_trajectory
        )

    def __len__(self) -> int:
        return self.arrays.num_scenes * len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return _unbatch(self.__getitems__([index]))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = np.asarray(indices, dtype=np.int64)  # (B,)
        if index.ndim != 1 or ((index < 0) | (index >= len(self))).any():
            raise IndexError(f"rollout indices must lie in [0, {len(self)})")
        scene = index // len(self.starts)
        start = self.starts[index % len(self.starts)]
        window = start[:, None] + np.arange(self.horizon + 1)  # (B, H+1)
        past = start[:, None] + np.arange(-self.history, 0)  # (B, history)
        rows = scene[:, None]
        return {
            "positions": torch.from_numpy(self.arrays.positions[rows, window]),
            "velocities": torch.from_numpy(self.arrays.velocities[rows, window]),
            "past_velocities": torch.from_numpy(self.arrays.velocities[rows, past]),
            "radii": torch.from_numpy(self.arrays.radii[scene]),
            "index": torch.from_numpy(index),
            "frame": torch.from_numpy(start),
        }
