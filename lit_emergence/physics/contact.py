"""Linear spring-dashpot contact law for discs and walls (equations in docs/physics.md).

A pair ``i, j`` with overlap ``delta = R_i + R_j - |x_i - x_j| > 0`` pushes ``i`` with
``(k delta - c v_n) n``, ``n = (x_i - x_j)/|x_i - x_j|``, ``v_n = (v_i - v_j) . n``. A wall is a
disc of infinite mass: the same law with the wall's inward normal and effective mass ``m_i``.
The dashpot ``c`` of each pair comes from the restitution ``e`` and the pair's effective mass, so
every collision (light or heavy pair, disc or wall) has the same ``e``. The dashpot force is not
clamped to be repulsive: it may pull briefly at the end of a contact, which is what makes the
``e(c)`` relation exact.

The kernels work on component-major tensors ``(B, 2, N)`` (x row, y row): pair differences of a
contiguous row are fast, those of interleaved ``(B, N, 2)`` pairs are not. They gate forces
with ``relu``/``sign`` instead of boolean masks (no ``where``, no data-dependent control flow),
so the same code runs eagerly, under ``torch.compile`` and inside a CUDA graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_emergence.physics.config import SimulationConfig
from lit_emergence.physics.workspace import Workspace, scratch

# Floor of squared pair distances: far below the round-off of any real distance, even in float32
# (1e-30 against ~1e-7 of a unit distance), yet keeps 1/distance finite for coincident discs.
_TINY_SQUARED_DISTANCE = 1e-30


def damping_coefficient(
    stiffness: float, effective_mass: Tensor | float, restitution: float
) -> Tensor | float:
    """Dashpot constant that gives a contact the restitution ``e``.

    ``c = -2 ln(e) sqrt(m* k) / sqrt(pi^2 + ln(e)^2)``; ``e = 1`` gives ``c = 0``.

    Args:
        stiffness: Spring constant ``k``.
        effective_mass: ``m* = m_i m_j / (m_i + m_j)`` (``m_i`` for a wall); float or tensor.
        restitution: ``e`` in ``(0, 1]``.

    Returns:
        ``c``, a float or a tensor shaped like ``effective_mass``.

    """
    log_e = math.log(restitution)
    factor = -2.0 * log_e * math.sqrt(stiffness) / math.sqrt(math.pi**2 + log_e**2)
    return factor * effective_mass**0.5


@dataclass
class ContactParameters:
    """Per-scene constants of the contact law, computed once per simulation.

    Component-major shapes: a ``(B, 2, N)`` tensor has the x row then the y row.

    Attributes:
        scaled_radius_sum: ``(B, N, N)`` ``k (R_i + R_j)``; ``-k`` on the diagonal, so that a disc
            never touches itself.
        pair_damping: ``(B, N, N)`` dashpot ``c_ij`` from the pair's effective mass (0 on the
            diagonal).
        distance_offset: ``(N, N)`` added to squared distances: 1 on the diagonal (a disc's
            distance to itself reads 1, not 0) and a negligible 1e-30 elsewhere (coincident
            discs get no force instead of NaN).
        scaled_radii: ``(B, 1, N)`` ``k R_i``: ``k`` times the overlap with a lower wall is
            ``k R_i - k x``.
        scaled_upper_offset: ``(B, 2, N)`` ``k (R_i - L)`` with ``L = (box_width, box_height)``:
            ``k`` times the overlap with an upper wall is ``k x + k (R_i - L)``.
        wall_damping: ``(B, 1, N)`` dashpot of disc ``i`` against a wall (effective mass ``m_i``).
        masses: ``(B, 1, N)``.
        inverse_mass: ``(B, 1, N)``.
        gravity: ``(1, 2, 1)`` acceleration ``(0, -g)``.
        stiffness: Spring constant ``k``.

    """

    scaled_radius_sum: Tensor
    pair_damping: Tensor
    distance_offset: Tensor
    scaled_radii: Tensor
    scaled_upper_offset: Tensor
    wall_damping: Tensor
    masses: Tensor
    inverse_mass: Tensor
    gravity: Tensor
    stiffness: float


def contact_parameters(
    radii: Tensor, masses: Tensor, config: SimulationConfig
) -> ContactParameters:
    """Precompute the constants of the contact law for a batch of scenes.

    Args:
        radii: ``(B, N)`` disc radii.
        masses: ``(B, N)`` disc masses.
        config: Stiffness, restitution, box and gravity.

    Returns:
        The constants, on the device and in the dtype of ``radii``.

    """
    k = float(config.stiffness)
    num_particles = radii.shape[-1]
    self_pairs = torch.eye(num_particles, dtype=torch.bool, device=radii.device)
    distance_offset = torch.where(self_pairs, 1.0, _TINY_SQUARED_DISTANCE).to(radii.dtype)
    radius_sum = radii.unsqueeze(-1) + radii.unsqueeze(-2)  # (B, N, N)
    # The diagonal distance reads 1 (distance_offset); a contact distance of -1 keeps it apart.
    radius_sum = torch.where(self_pairs, -1.0, radius_sum)
    effective_mass = masses.unsqueeze(-1) * masses.unsqueeze(-2)
    effective_mass = effective_mass / (masses.unsqueeze(-1) + masses.unsqueeze(-2))
    pair_damping = damping_coefficient(k, effective_mass, config.restitution)
    pair_damping = torch.where(self_pairs, 0.0, pair_damping)
    box = torch.tensor(
        [config.box_width, config.box_height], dtype=radii.dtype, device=radii.device
    ).view(1, 2, 1)
    gravity = torch.tensor([0.0, -config.gravity], dtype=radii.dtype, device=radii.device)
    column_masses = masses.unsqueeze(1)  # (B, 1, N)
    return ContactParameters(
        scaled_radius_sum=(k * radius_sum).contiguous(),
        pair_damping=pair_damping.contiguous(),
        distance_offset=distance_offset,
        scaled_radii=k * radii.unsqueeze(1),
        scaled_upper_offset=(k * (radii.unsqueeze(1) - box)).contiguous(),
        wall_damping=damping_coefficient(k, column_masses, config.restitution),
        masses=column_masses,
        inverse_mass=1.0 / column_masses,
        gravity=gravity.view(1, 2, 1),
        stiffness=k,
    )


def scaled_overlaps(
    positions: Tensor, params: ContactParameters, workspace: Workspace | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Pair separations and ``k`` times the positive part of the overlaps.

    Args:
        positions: ``(B, 2, N)`` component-major disc centres.
        params: Contact constants.
        workspace: Scratch buffers to reuse (``None`` allocates).

    Returns:
        ``(separation, inverse_distance, overlap)``: ``(B, 2, N, N)`` ``x_i - x_j``, ``(B, N, N)``
        ``1/|x_i - x_j|`` (1 on the diagonal), ``(B, N, N)`` ``k max(delta_ij, 0)``; the last is
        positive exactly for touching pairs.

    """
    batch, _, num = positions.shape
    pairs = (batch, num, num)
    separation = torch.sub(
        positions.unsqueeze(3),
        positions.unsqueeze(2),
        out=scratch(workspace, "separation", (batch, 2, num, num), positions),
    )  # (B, 2, N, N)
    dx, dy = separation[:, 0], separation[:, 1]
    squared = torch.addcmul(
        params.distance_offset, dx, dx, out=scratch(workspace, "distance", pairs, positions)
    ).addcmul_(dy, dy)
    inverse = torch.rsqrt(squared, out=scratch(workspace, "inverse", pairs, positions))
    distance = squared.mul_(inverse)
    overlap = torch.sub(
        params.scaled_radius_sum,
        distance,
        alpha=params.stiffness,
        out=scratch(workspace, "overlap", pairs, positions),
    ).relu_()
    return separation, inverse, overlap


def pair_forces(
    positions: Tensor,
    velocities: Tensor,
    params: ContactParameters,
    workspace: Workspace | None = None,
) -> tuple[Tensor, Tensor]:
    """Total pair contact force on each disc, and which pairs touch.

    Args:
        positions: ``(B, 2, N)`` component-major.
        velocities: ``(B, 2, N)``; the dashpots see these.
        params: Contact constants.
        workspace: Scratch buffers to reuse (``None`` allocates).

    Returns:
        ``(force, overlap)``: ``(B, 2, N)`` sum over partners of the force on each disc and the
        ``(B, N, N)`` ``k max(delta, 0)`` (positive for touching pairs). With a workspace,
        ``overlap`` is a workspace buffer, overwritten by the next call.

    """
    batch, _, num = positions.shape
    separation, inverse, overlap = scaled_overlaps(positions, params, workspace)
    dx, dy = separation[:, 0], separation[:, 1]
    damping = torch.sign(overlap, out=scratch(workspace, "damping", (batch, num, num), overlap))
    damping.mul_(params.pair_damping)  # c_ij for touching pairs, else 0
    relative = torch.sub(
        velocities.unsqueeze(3),
        velocities.unsqueeze(2),
        out=scratch(workspace, "relative", (batch, 2, num, num), velocities),
    )  # (B, 2, N, N) v_i - v_j
    normal_speed = relative[:, 0].mul_(dx).addcmul_(relative[:, 1], dy).mul_(inverse)
    # (k delta - c v_n) / |x_i - x_j|: the force along the unnormalised separation.
    magnitude = torch.addcmul(
        overlap,
        damping,
        normal_speed,
        value=-1,
        out=scratch(workspace, "magnitude", (batch, num, num), overlap),
    ).mul_(inverse)
    pair_force = torch.mul(magnitude.unsqueeze(1), separation, out=relative)  # (B, 2, N, N)
    return pair_force.sum(-1), overlap


def wall_forces(
    positions: Tensor, velocities: Tensor, params: ContactParameters
) -> tuple[Tensor, Tensor]:
    """Compute the forces of the four walls on each disc.

    Args:
        positions: ``(B, 2, N)`` component-major.
        velocities: ``(B, 2, N)``.
        params: Contact constants.

    Returns:
        ``(lower, upper)``, each ``(B, 2, N)``: row 0 is the x-force of the left (lower) or right
        (upper) wall, row 1 the y-force of the floor (lower) or ceiling (upper).

    """
    k = params.stiffness
    lower = torch.sub(params.scaled_radii, positions, alpha=k).relu_()  # k delta, x=0 and y=0
    upper = torch.add(params.scaled_upper_offset, positions, alpha=k).relu_()  # x=W and y=H
    lower_damping = lower.sign().mul_(params.wall_damping)
    upper_damping = upper.sign().mul_(params.wall_damping)
    # Lower walls push along +, normal speed v; upper walls push along -, normal speed -v.
    lower_force = lower.addcmul_(lower_damping, velocities, value=-1)
    upper_force = upper.neg_().addcmul_(upper_damping, velocities, value=-1)
    return lower_force, upper_force


def contact_accelerations(
    positions: Tensor,
    velocities: Tensor,
    params: ContactParameters,
    workspace: Workspace | None = None,
) -> tuple[Tensor, Tensor]:
    """Acceleration of each disc from contacts and gravity.

    Args:
        positions: ``(B, 2, N)`` component-major.
        velocities: ``(B, 2, N)``; the dashpots see these.
        params: Contact constants.
        workspace: Scratch buffers to reuse (``None`` allocates).

    Returns:
        ``(acceleration (B, 2, N), overlap (B, N, N))``; see :func:`pair_forces`.

    """
    force, overlap = pair_forces(positions, velocities, params, workspace)
    lower, upper = wall_forces(positions, velocities, params)
    force = force.add_(lower).add_(upper)
    return torch.addcmul(params.gravity, force, params.inverse_mass), overlap


def potential_energy(positions: Tensor, overlap: Tensor, params: ContactParameters) -> Tensor:
    """Gravitational plus elastic (pair and wall springs) energy of each scene.

    Args:
        positions: ``(B, 2, N)`` component-major.
        overlap: ``(B, N, N)`` ``k max(delta, 0)`` at these positions.
        params: Contact constants.

    Returns:
        ``(B,)`` energy; zero of gravity at ``y = 0``.

    """
    k = params.stiffness
    gravitational = -(params.masses * params.gravity * positions).sum((1, 2))
    # (k delta)^2 / (2k) per pair; the matrix holds each pair twice.
    pair_elastic = torch.linalg.vector_norm(overlap, dim=(1, 2)).square() / (4 * k)
    lower = torch.sub(params.scaled_radii, positions, alpha=k).relu_()
    upper = torch.add(params.scaled_upper_offset, positions, alpha=k).relu_()
    wall_elastic = (lower.square() + upper.square()).sum((1, 2)) / (2 * k)
    return gravitational + pair_elastic + wall_elastic


def kinetic_energy(velocities: Tensor, params: ContactParameters) -> Tensor:
    """Kinetic energy ``sum 1/2 m v^2`` of each scene.

    Args:
        velocities: ``(B, 2, N)`` component-major.
        params: Contact constants (masses).

    Returns:
        ``(B,)`` energy.

    """
    return 0.5 * (params.masses * velocities.square()).sum((1, 2))


def component_major(vectors: Tensor) -> Tensor:
    """Copy ``(B, N, 2)`` vectors into a new contiguous ``(B, 2, N)`` tensor.

    Args:
        vectors: ``(B, N, 2)``.

    Returns:
        ``(B, 2, N)``, never sharing memory with the input.

    """
    return vectors.transpose(1, 2).clone(memory_format=torch.contiguous_format)


def particle_major(vectors: Tensor) -> Tensor:
    """Copy ``(B, 2, N)`` vectors into a new contiguous ``(B, N, 2)`` tensor.

    Args:
        vectors: ``(B, 2, N)``.

    Returns:
        ``(B, N, 2)``, never sharing memory with the input.

    """
    return vectors.transpose(1, 2).clone(memory_format=torch.contiguous_format)


@dataclass
class ContactForces:
    """Forces on the discs of a batch of scenes at one instant.

    Attributes:
        forces: ``(B, N, 2)`` total force on each disc (pairs + walls + gravity).
        pair_contact: ``(B, N, N)`` bool, overlap > 0 (symmetric, diagonal False).
        wall_forces: ``(B, 4, 2)`` total force exerted by each wall on the discs, walls in the order
            left, right, floor, ceiling.

    """

    forces: Tensor
    pair_contact: Tensor
    wall_forces: Tensor


def contact_forces(
    positions: Tensor,
    velocities: Tensor,
    radii: Tensor,
    masses: Tensor,
    config: SimulationConfig,
) -> ContactForces:
    """All forces on the discs, with the wall forces itemised.

    Args:
        positions: ``(B, N, 2)``.
        velocities: ``(B, N, 2)``.
        radii: ``(B, N)``.
        masses: ``(B, N)``.
        config: Contact law, box and gravity.

    Returns:
        The forces; see :class:`ContactForces`.

    """
    params = contact_parameters(radii, masses, config)
    x, v = component_major(positions), component_major(velocities)
    pair_force, overlap = pair_forces(x, v, params)
    lower, upper = wall_forces(x, v, params)
    total = pair_force + lower + upper + params.masses * params.gravity  # (B, 2, N)
    lower_sum, upper_sum = lower.sum(-1), upper.sum(-1)  # (B, 2)
    zero = torch.zeros_like(lower_sum[:, 0])
    walls = torch.stack(
        [
            torch.stack([lower_sum[:, 0], zero], -1),  # left wall pushes +x
            torch.stack([upper_sum[:, 0], zero], -1),  # right wall pushes -x
            torch.stack([zero, lower_sum[:, 1]], -1),  # floor pushes +y
            torch.stack([zero, upper_sum[:, 1]], -1),  # ceiling pushes -y
        ],
        dim=1,
    )  # (B, 4, 2)
    return ContactForces(forces=particle_major(total), pair_contact=overlap > 0, wall_forces=walls)
