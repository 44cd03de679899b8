"""Training batches built on the training device: no DataLoader, no host-to-device copies.

:class:`DeviceBatchLoader` keeps the training split's positions, velocities and radii on the
training device and builds each shuffled, mirror-augmented one-step batch there by indexing
(:func:`~lit_emergence.data.dataset.one_step_batch`, the same code as the CPU dataset). The
sample order and the mirror flags of a whole epoch are drawn on the CPU from dedicated
generators and sent to the device once per epoch, so a step launches a few gather kernels and
never waits for the GPU; the draws do not depend on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from lit_emergence.data.dataset import OneStepDataset, one_step_batch

# Distinguish these streams from each other and from the CPU dataset's augmentation stream.
_ORDER_STREAM = 0x6F7264  # "ord"
_DEVICE_MIRROR_STREAM = 0x646D69  # "dmi"


def stream_generator(*words: int) -> torch.Generator:
    """Return a CPU generator seeded from ``words`` (e.g. seed, stream id, rank)."""
    seed = int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class DeviceBatchLoader:
    """Iterable of shuffled one-step training batches gathered on ``device``.

    Each epoch is one permutation of the samples, drawn from a stream that depends on ``seed``
    only, so every rank draws the same permutation and keeps its own disjoint share (every
    ``world_size``-th sample from ``rank``, as ``DistributedSampler`` does); the incomplete last
    batch is dropped. Mirror flags (probability 1/2 when the dataset mirrors) come from a
    stream seeded by ``(seed, rank)``. Both streams continue across epochs.

    A batch holds the keys of :class:`~lit_emergence.data.dataset.OneStepDataset` except
    ``contacts`` (training does not need them; the measurement callbacks use ``probe_batch``).

    Args:
        dataset: The training dataset (its arrays, normaliser, history, mirror setting).
        batch_size: Samples per batch.
        device: Where the arrays live and the batches are built.
        seed: Data seed.
        rank: Global rank of this process.
        world_size: Number of training processes.
        arrays: Optional ``(positions, velocities, radii)`` already on ``device`` (shared
            between loaders so the split is uploaded once).

    """

    def __init__(
        self,
        dataset: OneStepDataset,
        batch_size: int,
        device: torch.device | str,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        arrays: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.history = dataset.history
        self.box_width = dataset.box_width
        self.mirror_augment = dataset.mirror_augment
        self.num_samples = len(dataset)
        self.arrays = arrays if arrays is not None else device_arrays(dataset, self.device)
        self.normalizer = dataset.normalizer.to(self.device)
        self.order_generator = stream_generator(seed, _ORDER_STREAM)
        self.mirror_generator = stream_generator(seed, _DEVICE_MIRROR_STREAM, rank)
        self.samples_per_rank = self.num_samples // world_size

    def __len__(self) -> int:
        return self.samples_per_rank // self.batch_size

    def batch(self, index: Tensor, mirrored: Tensor) -> dict[str, Tensor]:
        """Build the batch of samples ``index`` (B,), mirroring where ``mirrored`` (B,) is True.

        Args:
            index: int64 sample ids, on any device.
            mirrored: bool flags, on any device.

        Returns:
            The batch, every tensor on this loader's device.

        """
        positions, velocities, radii = self.arrays
        return one_step_batch(
            positions,
            velocities,
            radii,
            self.normalizer,
            index.to(self.device),
            mirrored.to(self.device),
            history=self.history,
            box_width=self.box_width,
        )

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        count = len(self) * self.batch_size
        order = torch.randperm(self.num_samples, generator=self.order_generator)
        index = order[self.rank :: self.world_size][:count]
        if self.mirror_augment:
            mirrored = torch.rand(count, generator=self.mirror_generator) < 0.5
        else:
            mirrored = torch.zeros(count, dtype=torch.bool)
        # One transfer per epoch; each step then only slices device tensors.
        index, mirrored = index.to(self.device), mirrored.to(self.device)
        for start in range(0, count, self.batch_size):
            stop = start + self.batch_size
            yield self.batch(index[start:stop], mirrored[start:stop])


def device_arrays(dataset: OneStepDataset, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Copy a dataset's positions, velocities and radii to ``device``."""
    arrays = dataset.arrays
    return tuple(
        torch.from_numpy(array).to(device)
        for array in (arrays.positions, arrays.velocities, arrays.radii)
    )  # type: ignore[return-value]
