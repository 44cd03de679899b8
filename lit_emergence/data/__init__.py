"""Data layer: simulate trajectories, cache them on disk, normalise, and batch them.

``ParticleDataModule`` is the entry point; ``FeatureNormalizer`` turns raw states into model
inputs and predictions back into states.
"""

from lit_emergence.data.arrays import TrajectoryArrays
from lit_emergence.data.datamodule import ParticleDataModule
from lit_emergence.data.dataset import OneStepDataset, RolloutDataset, passthrough_collate
from lit_emergence.data.normalize import FeatureNormalizer

__all__ = [
    "FeatureNormalizer",
    "OneStepDataset",
    "ParticleDataModule",
    "RolloutDataset",
    "TrajectoryArrays",
    "passthrough_collate",
]
