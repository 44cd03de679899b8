"""Simulate the train/val/test trajectories in chunks and keep them in the on-disk cache.

Each split has its own random stream, derived from ``(seed, split)``, so the splits are
independent and each is reproducible on its own: changing the number of validation
trajectories does not change a single training trajectory.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lit_emergence.data.arrays import ARRAY_NAMES, TrajectoryArrays, pack_contacts, packed_width
from lit_emergence.data.cache import (
    CacheError,
    atomic_cache_writer,
    cache_directory,
    load_arrays,
)
from lit_emergence.physics import SimulationConfig, simulate

#: Bump when the stored arrays change meaning or layout; old caches are then regenerated.
FORMAT_VERSION = 1

#: The splits, in the order they are generated; the index enters each split's seed.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_seed(seed: int, split: str) -> int:
    """Derive a 63-bit seed for one split from the data seed and the split's name.

    Args:
        seed: Non-negative data seed.
        split: One of :data:`SPLITS`.

    Returns:
        Seed for that split's :class:`torch.Generator`.

    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def split_generator(seed: int, split: str) -> torch.Generator:
    """Return a fresh CPU generator seeded from ``(seed, split)``."""
    return torch.Generator().manual_seed(split_seed(seed, split))


def cache_key(
    config: SimulationConfig, sizes: Mapping[str, int], seed: int, generation_batch: int
) -> dict[str, Any]:
    """Everything that determines the cached arrays, as a JSON-serialisable dict.

    ``generation_batch`` is part of the key because the random draws of a chunk of scenes
    depend on the chunk size.
    """
    return {
        "format_version": FORMAT_VERSION,
        "simulation": config.to_dict(),
        "sizes": {split: int(sizes[split]) for split in SPLITS},
        "seed": int(seed),
        "generation_batch": int(generation_batch),
    }


Allocator = Callable[[str, tuple[int, ...], type], np.ndarray]


def simulate_split(
    config: SimulationConfig,
    num_scenes: int,
    allocate: Allocator,
    *,
    generator: torch.Generator,
    generation_batch: int,
    progress: bool = True,
    description: str = "simulating",
) -> TrajectoryArrays:
    """Simulate ``num_scenes`` trajectories in chunks and write them into allocated arrays.

    Args:
        config: Validated simulation settings.
        num_scenes: S, number of trajectories.
        allocate: ``allocate(name, shape, dtype)`` returns a writable array (a memory map
            in the cache, or plain memory); called once per name in :data:`ARRAY_NAMES`.
        generator: Source of randomness for the whole split, consumed chunk by chunk.
        generation_batch: Scenes simulated together in one batched call.
        progress: Show a tqdm progress bar over scenes.
        description: Label of the progress bar.

    Returns:
        The filled arrays.

    """
    N, T = config.num_particles, config.num_frames
    positions = allocate("positions", (num_scenes, T, N, 2), np.float32)
    velocities = allocate("velocities", (num_scenes, T, N, 2), np.float32)
    radii = allocate("radii", (num_scenes, N), np.float32)
    contacts = allocate("contacts_packed", (num_scenes, T - 1, N, packed_width(N)), np.uint8)
    with tqdm(total=num_scenes, desc=description, unit="scene", disable=not progress) as bar:
        for start in range(0, num_scenes, generation_batch):
            stop = min(start + generation_batch, num_scenes)
            trajectory = simulate(config, stop - start, generator=generator, dtype=torch.float32)
            positions[start:stop] = trajectory.positions.numpy()
            velocities[start:stop] = trajectory.velocities.numpy()
            radii[start:stop] = trajectory.radii.numpy()
            contacts[start:stop] = pack_contacts(trajectory.contacts.numpy())
            bar.update(stop - start)
    return TrajectoryArrays(positions, velocities, radii, contacts)


def _write_cache(
    directory: Path,
    key: dict[str, Any],
    config: SimulationConfig,
    sizes: Mapping[str, int],
    seed: int,
    generation_batch: int,
    progress: bool,
) -> None:
    """Simulate every split straight into a new cache directory (atomically)."""
    with atomic_cache_writer(directory, key) as writer:
        for split in SPLITS:

            def allocate(name: str, shape: tuple[int, ...], dtype: type, split: str = split):
                return writer.allocate(f"{split}_{name}", shape, dtype)

            simulate_split(
                config,
                sizes[split],
                allocate,
                generator=split_generator(seed, split),
                generation_batch=generation_batch,
                progress=progress,
                description=f"simulating {split}",
            )


def load_or_generate(
    config: SimulationConfig,
    sizes: Mapping[str, int],
    *,
    seed: int,
    generation_batch: int,
    cache_dir: str | Path,
    progress: bool = True,
) -> dict[str, TrajectoryArrays]:
    """Load the trajectories of all splits from the cache, simulating them if needed.

    A cache that is corrupt or describes other settings is reported with a warning and
    regenerated.

    Args:
        config: Validated simulation settings.
        sizes: Number of trajectories per split, keyed by the names in :data:`SPLITS`.
        seed: Data seed; each split's stream is derived from it (:func:`split_seed`).
        generation_batch: Scenes simulated together in one call.
        cache_dir: Root of the cache; the arrays live in ``<cache_dir>/<key hash>/``.
        progress: Show a progress bar while simulating.

    Returns:
        The arrays of each split, keyed by split name.

    """
    config = dataclasses.replace(config)  # never alias a caller's mutable config
    key = cache_key(config, sizes, seed, generation_batch)
    directory = cache_directory(cache_dir, key)
    required = [f"{split}_{name}" for split in SPLITS for name in ARRAY_NAMES]
    try:
        arrays = load_arrays(directory, key, required)
    except FileNotFoundError:
        arrays = None
    except CacheError as error:
        warnings.warn(f"Regenerating the data cache at {directory}: {error}", stacklevel=2)
        arrays = None
    if arrays is None:
        _write_cache(directory, key, config, sizes, seed, generation_batch, progress)
        arrays = load_arrays(directory, key, required)
    return {
        split: TrajectoryArrays(**{name: arrays[f"{split}_{name}"] for name in ARRAY_NAMES})
        for split in SPLITS
    }
