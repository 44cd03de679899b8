"""The state of a batch of scenes at one instant: what the integrator reads and writes.

A leaf module (it imports nothing else of :mod:`lit_emergence.physics`), so placement, the
integrator and any caller can all depend on it without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ParticleState:
    """Discs of a batch of scenes at one instant.

    Attributes:
        positions: ``(B, N, 2)`` disc centres.
        velocities: ``(B, N, 2)``.
        radii: ``(B, N)``.
        masses: ``(B, N)``.
        accelerations: ``(B, N, 2)`` acceleration at these positions as the integrator evaluated
            it, or ``None`` (then :func:`~lit_emergence.physics.simulator.step` evaluates it from
            positions and velocities).

    """

    positions: Tensor
    velocities: Tensor
    radii: Tensor
    masses: Tensor
    accelerations: Tensor | None = None
