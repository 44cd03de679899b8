"""Data layer: simulate trajectories, cache them on disk, normalise, and batch them.

``ParticleDataModule`` is the entry point; ``FeatureNormalizer`` turns raw states into model
inputs and predictions back into states. The datasets, storage and loaders behind them stay
importable from their modules (``dataset.OneStepDataset``, ``arrays.TrajectoryArrays``,
``batches.TrainBatchLoader``, ...).
"""

from lit_emergence.data.datamodule import ParticleDataModule
from lit_emergence.data.normalize import FeatureNormalizer

__all__ = ["FeatureNormalizer", "ParticleDataModule"]
