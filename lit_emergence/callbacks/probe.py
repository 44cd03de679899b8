"""The probe set: a fixed batch of samples every measurement is made on.

Chosen once at the start of training and saved to ``RUN_DIR/emergence/probe_<history>.pt``
(one per callback); a resumed run loads that file, so measurements before and after a restart
are made on the same samples. Under DDP each rank measures its own shard (samples
``rank, rank + world, ...``) unless the callback asks for the whole set.

Where it comes from, first match wins:

1. the saved file of this run (resume);
2. an explicit probe batch given to the callback;
3. ``trainer.datamodule.probe_batch(num_samples, seed, split)`` if the datamodule has it
   (:class:`~lit_emergence.data.ParticleDataModule` does: samples spread over the validation
   trajectories from free fall to the settled pile);
4. the first ``num_samples`` samples of the datamodule's first validation dataloader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch import Tensor

from lit_emergence.records.files import replaced


@dataclass
class ProbeSet:
    """A dict of tensors with a common leading sample dimension (this rank's shard)."""

    tensors: dict[str, Tensor]

    @property
    def num_samples(self) -> int:
        """Number of samples held."""
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, key: str) -> Tensor:
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def shard(self, rank: int, world_size: int) -> ProbeSet:
        """Return samples ``rank, rank + world_size, ...``."""
        return ProbeSet({k: v[rank::world_size] for k, v in self.tensors.items()})

    def to(self, device: torch.device | str) -> ProbeSet:
        """Move every tensor to ``device`` (no copy when already there)."""
        return ProbeSet({k: v.to(device) for k, v in self.tensors.items()})

    def batches(self, batch_size: int) -> Iterator[dict[str, Tensor]]:
        """Consecutive chunks of at most ``batch_size`` samples, as batch dicts."""
        for start in range(0, self.num_samples, batch_size):
            yield {k: v[start : start + batch_size] for k, v in self.tensors.items()}


def _tensors_only(batch: object) -> dict[str, Tensor]:
    """A batch as a dict of CPU tensors: a dict as it is, ``(inputs, target)`` named so.

    Raises:
        ValueError: For a batch of another shape (pass ``probe=`` to the callback instead).
    """
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = {field.name: getattr(batch, field.name) for field in dataclasses.fields(batch)}
    elif isinstance(batch, list | tuple) and len(batch) == 2:
        batch = dict(zip(("inputs", "target"), batch, strict=True))
    if not isinstance(batch, Mapping):
        raise ValueError(
            f"a probe batch must be a dict, an (inputs, target) pair or a dataclass of tensors, "
            f"got {type(batch).__name__}; pass probe=<dict of tensors> to the callback"
        )
    return {k: v.detach().cpu() for k, v in batch.items() if isinstance(v, Tensor)}


def _from_val_dataloader(trainer: Trainer, num_samples: int) -> dict[str, Tensor]:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "val_dataloader"):
        raise ValueError(
            "no probe set: pass probe=<batch dict> to the callback, or train with a datamodule "
            "that has val_dataloader() or probe_batch(num_samples, seed)"
        )
    loaders = datamodule.val_dataloader()
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    chunks: list[dict[str, Tensor]] = []
    collected = 0
    for batch in loader:
        chunk = _tensors_only(batch)
        chunks.append(chunk)
        collected += len(next(iter(chunk.values())))
        if collected >= num_samples:
            break
    return {k: torch.cat([c[k] for c in chunks])[:num_samples] for k in chunks[0]}


def select_probe_set(
    trainer: Trainer,
    path: Path,
    num_samples: int,
    seed: int,
    explicit: Mapping[str, Tensor] | None = None,
    split: str = "val",
    shard: bool = True,
) -> ProbeSet:
    """Return this rank's shard of the run's probe set, saving the full set on rank 0.

    Args:
        trainer: The trainer (for the datamodule, rank and world size).
        path: Where the run's probe set is (or will be) saved.
        num_samples: Probe set size when it is chosen now.
        seed: Seed of the choice (passed to ``datamodule.probe_batch``).
        explicit: A probe batch given by the user.
        split: Split passed to ``datamodule.probe_batch``.
        shard: Return this rank's shard (True) or the whole set (False).

    Returns:
        The probe shard of this rank, or the whole probe set.
    """
    if path.is_file():
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    elif explicit is not None:
        tensors = _tensors_only(explicit)
    else:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "probe_batch"):
            tensors = _tensors_only(datamodule.probe_batch(num_samples, seed, split=split))
        else:
            tensors = _from_val_dataloader(trainer, num_samples)
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced(path, "wb") as handle:
                torch.save(tensors, handle)
    probe = ProbeSet(tensors)
    return probe.shard(trainer.global_rank, trainer.world_size) if shard else probe
