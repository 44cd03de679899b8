"""Batched 2-D soft-sphere (DEM) simulator: discs, walls, gravity, spring-dashpot contacts.

Everything is batched over independent scenes (tensors ``(B, N, 2)``), runs on CPU or GPU and
keeps the dtype of its inputs. ``simulate`` records positions, velocities, the contacts during
each frame interval and the energy of each frame.
"""

from lit_emergence.physics.config import SimulationConfig
from lit_emergence.physics.contact import (
    ContactForces,
    ContactParameters,
    contact_duration,
    contact_forces,
    contact_parameters,
    damping_coefficient,
)
from lit_emergence.physics.placement import initial_state, lattice_shape
from lit_emergence.physics.simulator import (
    ParticleState,
    Trajectory,
    advance,
    simulate,
    step,
    total_energy,
)
from lit_emergence.physics.workspace import Workspace

__all__ = [
    "ContactForces",
    "ContactParameters",
    "ParticleState",
    "SimulationConfig",
    "Trajectory",
    "Workspace",
    "advance",
    "contact_duration",
    "contact_forces",
    "contact_parameters",
    "damping_coefficient",
    "initial_state",
    "lattice_shape",
    "simulate",
    "step",
    "total_energy",
]
