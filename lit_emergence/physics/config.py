"""The settings of one simulated data set, checked before any work is done.

Also the two scalar formulas the checks need, :func:`contact_duration` (which sets the time
step) and :func:`lattice_shape` (how many discs the start lattice holds). They live here, not in
:mod:`~lit_emergence.physics.contact` and :mod:`~lit_emergence.physics.placement`, so that this
module imports nothing else of the package and every other physics module can import it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

INTEGRATORS = ("verlet", "euler")

# The integrator resolves a contact only when it spans at least this many steps; between t_c/50 and
# t_c/20 is the accurate, stable range for the linear spring-dashpot (docs/physics.md).
MIN_STEPS_PER_CONTACT = 20
DEFAULT_STEPS_PER_CONTACT = 30


def contact_duration(stiffness: float, effective_mass: float, restitution: float) -> float:
    """Duration ``t_c = pi / omega_d`` of a collision under the damped linear spring.

    ``omega_d = sqrt(k/m* - (c/(2 m*))^2)`` with ``c`` from
    :func:`~lit_emergence.physics.contact.damping_coefficient`, which simplifies to
    ``t_c = sqrt(m*/k) sqrt(pi^2 + ln(e)^2)``.

    Args:
        stiffness: Spring constant ``k``.
        effective_mass: ``m*`` of the pair (``m_i`` for a wall).
        restitution: ``e`` in ``(0, 1]``.

    Returns:
        The contact duration.

    """
    log_e = math.log(restitution)
    return math.sqrt(effective_mass / stiffness) * math.sqrt(math.pi**2 + log_e**2)


# Guards floor(width / pitch) against round-off when the box is a whole number of pitches.
_ROUND_OFF = 1e-9


def lattice_shape(box_width: float, box_height: float, pitch: float) -> tuple[int, int]:
    """Columns and rows of lattice cells of at least ``pitch`` that fit in the box.

    Args:
        box_width: Width of the box.
        box_height: Height of the box.
        pitch: Smallest cell size (largest diameter plus the start gap).

    Returns:
        ``(columns, rows)``; their product is the number of discs that fit.

    """
    columns = math.floor(box_width / pitch + _ROUND_OFF)
    rows = math.floor(box_height / pitch + _ROUND_OFF)
    return max(columns, 0), max(rows, 0)


@dataclass
class SimulationConfig:
    """Discs in a box under gravity with linear spring-dashpot contacts.

    Lengths are in units of the disc radius when ``radius=1``. The defaults (16 equal discs in an
    11 x 24 box, soft springs with contact duration about 0.225) make contacts unambiguous, and a
    small transformer trained on them learns collision heads (docs/physics.md).

    Attributes:
        num_particles: Discs per scene.
        radius: Mean disc radius.
        radius_spread: Radii are drawn uniformly in ``[radius*(1-s), radius*(1+s)]``,
            ``0 <= s < 1``.
        mass: Mass of a disc of radius ``radius``; mass scales with area, ``(r/radius)^2``.
        box_width: Walls at ``x=0`` and ``x=box_width``.
        box_height: Floor at ``y=0``, ceiling at ``y=box_height``.
        gravity: Acceleration ``(0, -gravity)``.
        stiffness: Linear spring constant ``k`` of pair and wall contacts.
        restitution: Coefficient of restitution ``e`` in ``(0, 1]``; each pair's dashpot is
            derived from it and the pair's effective mass, so every collision has this ``e``.
        dt: Integrator step; ``None`` means ``contact_duration / 30``.
        substeps: Integrator steps per recorded frame.
        num_frames: Recorded frames per trajectory (``num_frames - 1`` transitions).
        init_speed: Standard deviation of each initial velocity component.
        init_gap: Surface gap between neighbouring discs of the start lattice, in units of
            ``radius``: the lattice cells tile the box and are at least ``2 r_max + gap`` wide,
            so a disc at a cell centre is at least ``gap/2`` from the walls. Each disc is then
            jittered by at most ``gap/4`` per coordinate, so discs start at least ``gap/2``
            apart and at least ``gap/4`` from the walls.
        integrator: ``"verlet"`` (velocity Verlet) or ``"euler"`` (semi-implicit Euler).

    """

    num_particles: int = 16
    radius: float = 1.0
    radius_spread: float = 0.0
    mass: float = 1.0
    box_width: float = 11.0
    box_height: float = 24.0
    gravity: float = 1.0
    stiffness: float = 100.0
    restitution: float = 0.6
    dt: float | None = None
    substeps: int = 10
    num_frames: int = 140
    init_speed: float = 1.0
    init_gap: float = 1.0
    integrator: str = "verlet"

    def validate(self) -> None:
        """Check every setting; cheap, so callers run it before any simulation.

        Raises:
            ValueError: One line naming the offending setting and what to change.

        """
        numbers = ("radius", "radius_spread", "mass", "box_width", "box_height", "gravity")
        numbers += ("stiffness", "restitution", "init_speed", "init_gap")
        for name in numbers:
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"SimulationConfig: {name}={value} must be a finite number")
        checks = [
            (self.num_particles >= 1, f"num_particles={self.num_particles} must be >= 1"),
            (self.radius > 0, f"radius={self.radius} must be > 0"),
            (
                0 <= self.radius_spread < 1,
                f"radius_spread={self.radius_spread} must be in [0, 1) so every radius is > 0",
            ),
            (self.mass > 0, f"mass={self.mass} must be > 0"),
            (self.box_width > 0, f"box_width={self.box_width} must be > 0"),
            (self.box_height > 0, f"box_height={self.box_height} must be > 0"),
            (self.gravity >= 0, f"gravity={self.gravity} must be >= 0 (it points down, -y)"),
            (self.stiffness > 0, f"stiffness={self.stiffness} must be > 0"),
            (
                0 < self.restitution <= 1,
                f"restitution={self.restitution} must be in (0, 1] (1 = elastic)",
            ),
            (self.substeps >= 1, f"substeps={self.substeps} must be >= 1"),
            (self.num_frames >= 2, f"num_frames={self.num_frames} must be >= 2"),
            (self.init_speed >= 0, f"init_speed={self.init_speed} must be >= 0"),
            (self.init_gap >= 0, f"init_gap={self.init_gap} must be >= 0"),
            (
                self.integrator in INTEGRATORS,
                f"integrator={self.integrator!r} is unknown; use one of {', '.join(INTEGRATORS)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SimulationConfig: {message}")
        if self.dt is not None:
            if not (math.isfinite(self.dt) and self.dt > 0):
                raise ValueError(
                    f"SimulationConfig: dt={self.dt} must be > 0, or None for contact_duration/30"
                )
            largest = self.contact_duration / MIN_STEPS_PER_CONTACT
            if self.dt > largest:
                raise ValueError(
                    f"SimulationConfig: dt={self.dt:.6g} is too large for stiffness="
                    f"{self.stiffness:g}: the contact duration is t_c={self.contact_duration:.6g},"
                    f" so dt must be <= t_c/{MIN_STEPS_PER_CONTACT}={largest:.6g}; reduce dt, set"
                    f" dt=None (t_c/{DEFAULT_STEPS_PER_CONTACT}) or lower stiffness"
                )
        columns, rows = lattice_shape(self.box_width, self.box_height, self.lattice_pitch)
        capacity = columns * rows
        if self.num_particles > capacity:
            raise ValueError(
                f"SimulationConfig: num_particles={self.num_particles} discs do not fit in the"
                f" {self.box_width:g} x {self.box_height:g} box: its start lattice of pitch"
                f" {self.lattice_pitch:g} (2*radius*(1+radius_spread) + init_gap*radius) has"
                f" {capacity} sites ({columns} x {rows}); enlarge box_width/box_height or reduce"
                " num_particles/init_gap/radius"
            )

    @property
    def lattice_pitch(self) -> float:
        """Smallest spacing of the start lattice: the largest diameter plus the gap."""
        return 2 * self.radius * (1 + self.radius_spread) + self.init_gap * self.radius

    @property
    def smallest_effective_mass(self) -> float:
        """Effective mass of a pair of the lightest discs, the shortest contacts of all.

        Walls act as infinite masses (effective mass ``m_i``), so wall contacts last longer.
        """
        lightest = self.mass * (1 - self.radius_spread) ** 2
        return lightest / 2

    @property
    def contact_duration(self) -> float:
        """Shortest pair contact duration ``t_c = pi / omega_d`` (lightest pair)."""
        return contact_duration(self.stiffness, self.smallest_effective_mass, self.restitution)

    @property
    def time_step(self) -> float:
        """Integrator step: ``dt`` or ``contact_duration / 30``."""
        if self.dt is not None:
            return float(self.dt)
        return self.contact_duration / DEFAULT_STEPS_PER_CONTACT

    @property
    def frame_interval(self) -> float:
        """Time between recorded frames, ``time_step * substeps``."""
        return self.time_step * self.substeps

    def to_dict(self) -> dict:
        """JSON-serialisable settings (plain floats, ints and strings), usable as a cache key."""
        return dataclasses.asdict(self)
