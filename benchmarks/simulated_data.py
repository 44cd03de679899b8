"""Shared by the benchmarks: a small ParticleDataModule of real simulator data, set up."""

from __future__ import annotations

from lit_emergence.data import ParticleDataModule
from lit_emergence.physics import SimulationConfig


def simulated_datamodule(
    particles: int,
    trajectories: int,
    batch_size: int,
    cache_dir: str,
    device_batches: bool = False,
) -> ParticleDataModule:
    """Return a set-up datamodule; more than 16 discs get the paper config's 15.5 x 32 box."""
    if particles <= 16:
        simulation = SimulationConfig(num_particles=particles)
    else:
        simulation = SimulationConfig(num_particles=particles, box_width=15.5, box_height=32.0)
    datamodule = ParticleDataModule(
        simulation=simulation,
        num_train=trajectories,
        num_val=2,
        num_test=2,
        batch_size=batch_size,
        cache_dir=cache_dir,
        device_batches=device_batches,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule
