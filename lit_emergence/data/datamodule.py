"""LightningDataModule: simulated trajectories, cached on disk, as one-step and rollout batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lit_emergence.data.arrays import TrajectoryArrays
from lit_emergence.data.batches import TrainBatchLoader, device_arrays
from lit_emergence.data.dataset import OneStepDataset, RolloutDataset, passthrough_collate
from lit_emergence.data.generate import load_or_generate
from lit_emergence.data.normalize import FeatureNormalizer
from lit_emergence.physics import SimulationConfig


def _require(condition: bool, message: str) -> None:
    """Raise a one-line ValueError unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


class ParticleDataModule(pl.LightningDataModule):
    """Granular-flow trajectories for learning a one-frame-ahead particle simulator.

    ``prepare_data`` simulates the train/val/test trajectories (or loads them from the
    checksummed cache in ``<cache_dir>/<hash of the settings>/``); ``setup`` loads them,
    fits the :class:`FeatureNormalizer` on the training split and builds the datasets.
    Validation and test each have two dataloaders: one-step samples (index 0) and rollout
    windows (index 1).

    Args:
        simulation: Simulator settings.
        num_train: Training trajectories.
        num_val: Validation trajectories.
        num_test: Test trajectories.
        batch_size: One-step samples per batch (per process under DDP); rollout batches
            hold at most this many windows.
        history: Previous velocities among the model inputs.
        mirror_augment: Mirror training samples about the vertical centre line at random.
        rollout_horizons: Rollout lengths (in frames) evaluated on val/test; the windows
            cover the longest.
        rollout_starts: Start frames per val/test trajectory, spread from the first to the
            last possible one (free fall to settled pile).
        cache_dir: Root directory of the trajectory cache.
        seed: Data seed: trajectories of each split and the augmentation streams.
        num_workers: Worker processes of the validation and test DataLoaders (0 loads in the
            main process). Training batches are gathered in the main process by
            :class:`~lit_emergence.data.batches.TrainBatchLoader` (a vectorised gather, no
            per-sample work), which is what makes a run resumable mid-epoch.
        generation_batch: Scenes simulated together when generating.
        device_batches: Keep the training split on the training device and build the
            training batches there instead of on the CPU: no per-step host work or copies, for
            fast GPU training. The batches are the same (same order, same mirror flags) except
            that they carry no ``contacts``. Validation and test are unchanged.

    """

    def __init__(
        self,
        simulation: SimulationConfig = SimulationConfig(),  # noqa: B008 (never mutated)
        num_train: int = 1000,
        num_val: int = 64,
        num_test: int = 64,
        batch_size: int = 128,
        history: int = 0,
        mirror_augment: bool = True,
        rollout_horizons: Sequence[int] = (1, 5, 10, 20),
        rollout_starts: int = 4,
        cache_dir: str = "data_cache",
        seed: int = 0,
        num_workers: int = 0,
        generation_batch: int = 256,
        device_batches: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(simulation, dict):
            simulation = SimulationConfig(**simulation)
        _require(
            isinstance(simulation, SimulationConfig),
            f"simulation must be a SimulationConfig, got {type(simulation).__name__}",
        )
        simulation = dataclasses.replace(simulation)  # private copy: the default is shared
        simulation.validate()
        _require(
            simulation.num_particles >= 2,
            f"simulation.num_particles={simulation.num_particles}: training data needs at least "
            "2 particles (attention passes between particles; collisions need pairs)",
        )
        cache = Path(cache_dir)
        _require(
            not cache.exists() or cache.is_dir(),
            f"cache_dir={cache_dir} is a file, not a directory: name a directory",
        )
        num_frames = simulation.num_frames
        for name, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("batch_size", batch_size),
            ("rollout_starts", rollout_starts),
            ("generation_batch", generation_batch),
        ):
            _require(value >= 1, f"{name} must be >= 1, got {value}")
        _require(
            0 <= history <= num_frames - 2,
            f"history must be in [0, simulation.num_frames - 2 = {num_frames - 2}], got {history}",
        )
        samples_per_trajectory = num_frames - 1 - history
        num_samples = num_train * samples_per_trajectory
        _require(
            batch_size <= num_samples,
            f"batch_size={batch_size} exceeds the {num_samples} training samples "
            f"(num_train * (num_frames - 1 - history)); lower batch_size or raise num_train",
        )
        horizons = tuple(int(h) for h in rollout_horizons)
        _require(len(horizons) > 0, "rollout_horizons must name at least one horizon")
        _require(min(horizons) >= 1, f"rollout_horizons must be >= 1, got {list(horizons)}")
        max_horizon = max(horizons)
        _require(
            max_horizon < num_frames - history,
            f"rollout_horizons: max horizon {max_horizon} must be < simulation.num_frames - "
            f"history = {num_frames - history}; shorten the horizons or simulate more frames",
        )
        max_starts = num_frames - history - max_horizon
        _require(
            rollout_starts <= max_starts,
            f"rollout_starts must be <= {max_starts} (num_frames - history - max horizon), "
            f"got {rollout_starts}",
        )
        _require(num_workers >= 0, f"num_workers must be >= 0, got {num_workers}")
        _require(seed >= 0, f"seed must be >= 0, got {seed}")
        _require(bool(str(cache_dir)), "cache_dir must be a non-empty path")

        self.simulation = simulation
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.batch_size = batch_size
        self.history = history
        self.mirror_augment = mirror_augment
        self.rollout_horizons = horizons
        self.rollout_starts = rollout_starts
        self.cache_dir = str(cache_dir)
        self.seed = seed
        self.num_workers = num_workers
        self.generation_batch = generation_batch
        self.device_batches = device_batches

        self.normalizer: FeatureNormalizer | None = None
        self.splits: dict[str, TrajectoryArrays] | None = None
        self.datasets: dict[str, OneStepDataset] = {}
        self.rollout_datasets: dict[str, RolloutDataset] = {}
        # The training split on the training device (device_batches), uploaded once.
        self._device_arrays: tuple[torch.device, tuple[torch.Tensor, ...]] | None = None

    # -- sizes known before setup (for LightningCLI argument links) --------------------------

    @property
    def feature_dim(self) -> int:
        """F, input features per particle: ``4 + 2*history + (1 if radii vary)``."""
        return 4 + 2 * self.history + int(self.simulation.radius_spread > 0)

    @property
    def target_dim(self) -> int:
        """Outputs per particle: the 2-D velocity change."""
        return 2

    @property
    def num_particles(self) -> int:
        """N, discs per scene."""
        return self.simulation.num_particles

    @property
    def max_horizon(self) -> int:
        """H, the longest rollout; rollout windows hold H+1 frames."""
        return max(self.rollout_horizons)

    # -- Lightning hooks ---------------------------------------------------------------------

    def _load(self) -> dict[str, TrajectoryArrays]:
        if self.splits is None:
            self.splits = load_or_generate(
                self.simulation,
                {"train": self.num_train, "val": self.num_val, "test": self.num_test},
                seed=self.seed,
                generation_batch=self.generation_batch,
                cache_dir=self.cache_dir,
            )
        return self.splits

    def prepare_data(self) -> None:
        """Simulate and cache the trajectories unless a valid cache exists (local rank 0)."""
        self._load()

    def _global_rank(self) -> int:
        """Rank of this process among all training processes."""
        if self.trainer is not None:
            return self.trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0

    def setup(self, stage: str | None = None) -> None:
        """Load the trajectories, fit the normaliser on the training split, build datasets.

        Args:
            stage: Lightning stage; all splits are prepared regardless, since the
                normaliser always comes from the training split.

        """
        splits = self._load()
        if self.normalizer is None:
            self.normalizer = FeatureNormalizer.from_training_split(
                splits["train"], self.simulation, self.history
            )
        rank = self._global_rank()
        if not self.datasets:
            for split in ("train", "val", "test"):
                self.datasets[split] = OneStepDataset(
                    splits[split],
                    self.normalizer,
                    history=self.history,
                    box_width=self.simulation.box_width,
                    mirror_augment=self.mirror_augment and split == "train",
                    seed=self.seed,
                    rank=rank,
                )
            for split in ("val", "test"):
                self.rollout_datasets[split] = RolloutDataset(
                    splits[split],
                    history=self.history,
                    horizon=self.max_horizon,
                    starts_per_trajectory=self.rollout_starts,
                )
        self.datasets["train"].set_rank(rank)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("call setup() before asking ParticleDataModule for dataloaders")

    def _loader(self, dataset: Any, batch_size: int) -> DataLoader:
        """An evaluation DataLoader of plain arguments (Lightning re-creates it under DDP)."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=passthrough_collate,
            persistent_workers=self.num_workers > 0,
            # Own generator: starting an iterator draws a worker seed from it, and from the
            # global random state without one, which would shift training's random draws
            # whenever validation runs (and differ between a resumed and an unbroken run).
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _evaluation_loaders(self, split: str) -> list[DataLoader]:
        self._require_setup()
        rollout = self.rollout_datasets[split]
        return [
            self._loader(self.datasets[split], self.batch_size),
            self._loader(rollout, min(self.batch_size, len(rollout))),
        ]

    def train_dataloader(self) -> TrainBatchLoader:
        """Shuffled one-step batches, resumable mid-epoch; the last incomplete batch is dropped.

        A :class:`~lit_emergence.data.batches.TrainBatchLoader` that shards the samples across
        DDP ranks itself, on the CPU, or on the trainer's device with ``device_batches``.
        """
        self._require_setup()
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        dataset = self.datasets["train"]
        if not self.device_batches:
            return TrainBatchLoader(
                dataset,
                self.batch_size,
                seed=self.seed,
                rank=rank,
                world_size=world_size,
                with_contacts=True,
            )
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if self._device_arrays is None or self._device_arrays[0] != device:
            self._device_arrays = (device, device_arrays(dataset, device))
        return TrainBatchLoader(
            dataset,
            self.batch_size,
            device,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            arrays=self._device_arrays[1],
        )

    def val_dataloader(self) -> list[DataLoader]:
        """``[one-step loader, rollout loader]`` over the validation split."""
        return self._evaluation_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        """``[one-step loader, rollout loader]`` over the test split."""
        return self._evaluation_loaders("test")

    def probe_batch(
        self, num_samples: int, seed: int = 0, split: str = "val"
    ) -> dict[str, torch.Tensor]:
        """Return a fixed batch of samples for measurement callbacks.

        The samples are drawn without replacement from every scene and frame of ``split``, so the
        probe set covers free fall, impacts and the settled pile. Not augmented.

        Args:
            num_samples: How many samples (at most the size of the validation split).
            seed: Seed of the draw.
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            A one-step batch dict (see the module docs), samples in index order, plus
            ``velocity_change`` (B, N, 2), the raw velocity change over the interval.
        """
        self._require_setup()
        if split not in self.datasets:
            raise ValueError(f"split must be one of {sorted(self.datasets)}, got {split!r}")
        dataset = self.datasets[split]
        count = min(num_samples, len(dataset))
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=generator)[:count].sort().values
        # Unaugmented: a probe must be the same samples every time it is drawn.
        batch = dataset.__getitems__(indices.tolist(), augment=False)
        # Raw velocity change over the interval: which queries were hit (impact score).
        assert self.normalizer is not None
        batch["velocity_change"] = self.normalizer.denormalize_target(batch["target"])
        return batch
