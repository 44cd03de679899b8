"""Training batches that a run can resume mid-epoch, exactly.

:class:`TrainBatchLoader` builds each shuffled, mirror-augmented one-step batch by indexing the
training split's arrays (:func:`~lit_emergence.data.dataset.one_step_batch`, the same code as
the dataset's), on the CPU or, with ``data.device_batches``, on the training device.

Epoch ``e``'s sample order is a permutation drawn from a generator seeded by ``(seed, e)``
alone, and its mirror flags from one seeded by ``(seed, e, rank)``; nothing carries over from
one epoch to the next. So the loader's whole state is its position, ``(epoch, batches done in
the epoch)``: :meth:`~TrainBatchLoader.state_dict` hands it to Lightning, which stores it in
every checkpoint, and a resumed run continues with the very batch the uninterrupted run would
have drawn next. Under DDP every rank draws the same permutation and keeps its own disjoint
share (every ``world_size``-th sample from ``rank``, as ``DistributedSampler`` does). The
global random state is never used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_emergence.data.dataset import OneStepDataset, one_step_batch

# Distinguish these streams from each other and from the dataset's own augmentation stream.
_ORDER_STREAM = 0x6F7264  # "ord"
_MIRROR_STREAM = 0x646D69  # "dmi"


def stream_generator(*words: int) -> torch.Generator:
    """Return a CPU generator seeded from ``words`` (e.g. seed, stream id, epoch, rank)."""
    seed = int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class TrainBatchLoader:
    """Iterable of shuffled one-step training batches, resumable at any batch.

    The incomplete last batch of an epoch is dropped. A batch holds the keys of
    :class:`~lit_emergence.data.dataset.OneStepDataset`; ``contacts`` only with
    ``with_contacts`` (training does not need them; the measurement callbacks use
    ``probe_batch``).

    Args:
        dataset: The training dataset (its arrays, normaliser, history, mirror setting).
        batch_size: Samples per batch.
        device: Where the arrays live and the batches are built.
        seed: Data seed.
        rank: Global rank of this process.
        world_size: Number of training processes.
        arrays: Optional ``(positions, velocities, radii)`` already on ``device`` (shared
            between loaders so the split is copied once).
        with_contacts: Add each sample's ground-truth ``contacts`` (CPU only).
    """

    def __init__(
        self,
        dataset: OneStepDataset,
        batch_size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        arrays: tuple[Tensor, Tensor, Tensor] | None = None,
        with_contacts: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.device = torch.device(device)
        if with_contacts and self.device.type != "cpu":
            raise ValueError("with_contacts needs device='cpu' (contacts are unpacked there)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.with_contacts = with_contacts
        self.num_samples = len(dataset)
        self.arrays = arrays if arrays is not None else device_arrays(dataset, self.device)
        self.normalizer = dataset.normalizer.to(self.device)
        self.samples_per_rank = self.num_samples // world_size
        #: The epoch being drawn, and how many of its batches have been handed out.
        self.epoch = 0
        self.batches_done = 0

    def __len__(self) -> int:
        return self.samples_per_rank // self.batch_size

    # ----------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """The position: the epoch, and the batches of it already handed out."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by :meth:`state_dict` (the next iteration starts there).

        Raises:
            ValueError: On a position this loader cannot have reached.
        """
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if epoch < 0 or not 0 <= done <= len(self):
            raise ValueError(
                f"cannot resume the training batches at epoch {epoch}, batch {done}: an epoch "
                f"has {len(self)} batches (did batch_size, num_train or the device count change?)"
            )
        self.epoch, self.batches_done = epoch, done

    # ----------------------------------------------------------------------------- batches
    def epoch_draws(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's sample ids and mirror flags of ``epoch``, in order (CPU tensors)."""
        count = len(self) * self.batch_size
        order = torch.randperm(
            self.num_samples, generator=stream_generator(self.seed, _ORDER_STREAM, epoch)
        )
        index = order[self.rank :: self.world_size][:count]
        if self.dataset.mirror_augment:
            flips = stream_generator(self.seed, _MIRROR_STREAM, epoch, self.rank)
            mirrored = torch.rand(count, generator=flips) < 0.5
        else:
            mirrored = torch.zeros(count, dtype=torch.bool)
        return index, mirrored

    def batch(self, index: Tensor, mirrored: Tensor) -> dict[str, Tensor]:
        """Build the batch of samples ``index`` (B,), mirroring where ``mirrored`` (B,) is True.

        Args:
            index: int64 sample ids, on any device.
            mirrored: bool flags, on any device.

        Returns:
            The batch, every tensor on this loader's device.
        """
        positions, velocities, radii = self.arrays
        batch = one_step_batch(
            positions,
            velocities,
            radii,
            self.normalizer,
            index.to(self.device),
            mirrored.to(self.device),
            history=self.dataset.history,
            box_width=self.dataset.box_width,
        )
        if self.with_contacts:
            scene = index.numpy() // self.dataset.samples_per_trajectory
            contacts = self.dataset.arrays.contacts(scene, batch["frame"].numpy())
            batch["contacts"] = torch.from_numpy(contacts)
        return batch

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self.batches_done >= len(self):  # the last epoch was finished: start the next
            self.epoch, self.batches_done = self.epoch + 1, 0
        index, mirrored = self.epoch_draws(self.epoch)
        # One transfer per epoch; each step then only slices device tensors.
        index, mirrored = index.to(self.device), mirrored.to(self.device)
        for number in range(self.batches_done, len(self)):
            rows = slice(number * self.batch_size, (number + 1) * self.batch_size)
            # Counted before the batch is used, so a checkpoint taken after the step it feeds
            # resumes with the next one.
            self.batches_done = number + 1
            yield self.batch(index[rows], mirrored[rows])
        self.epoch, self.batches_done = self.epoch + 1, 0


def device_arrays(dataset: OneStepDataset, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The dataset's positions, velocities and radii on ``device`` (no copy on the CPU)."""
    arrays = dataset.arrays
    return tuple(
        torch.from_numpy(array).to(device)
        for array in (arrays.positions, arrays.velocities, arrays.radii)
    )  # type: ignore[return-value]
