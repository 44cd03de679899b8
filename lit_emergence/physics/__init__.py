"""Batched 2-D soft-sphere (DEM) simulator: discs, walls, gravity, spring-dashpot contacts.

Everything is batched over independent scenes (tensors ``(B, N, 2)``), runs on CPU or GPU and
keeps the dtype of its inputs. ``simulate`` records positions, velocities, the contacts during
each frame interval and the energy of each frame.

This package exports what a user calls. The building blocks of the hot loop (``advance``,
``Workspace``, ``contact_parameters``, ...) stay importable from their modules, each of which
imports only modules listed before it: ``state`` (``ParticleState``), ``workspace`` (scratch
buffers), ``config`` (settings, ``contact_duration``, ``lattice_shape``), ``contact`` (the
contact law), ``placement`` (start states), ``fused`` (the Triton kernel), ``simulator``
(integrators, ``simulate``).
"""

from lit_emergence.physics.config import SimulationConfig
from lit_emergence.physics.contact import ContactForces, contact_forces
from lit_emergence.physics.placement import initial_state
from lit_emergence.physics.simulator import Trajectory, simulate, step, total_energy
from lit_emergence.physics.state import ParticleState

__all__ = [
    "ContactForces",
    "ParticleState",
    "SimulationConfig",
    "Trajectory",
    "contact_forces",
    "initial_state",
    "simulate",
    "step",
    "total_energy",
]
