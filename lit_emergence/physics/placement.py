"""Start states: discs on a random subset of a jittered lattice, random velocities.

The box is divided into ``columns x rows`` equal cells, each at least one lattice pitch
``2 r_max + gap`` wide and tall; each scene puts its discs at the centres of a random subset of
the cells and shifts each disc by at most ``gap/4`` per coordinate. Two discs are then at least
``gap/2`` apart and a disc at least ``gap/4`` from a wall, so nothing overlaps at the start.
"""

from __future__ import annotations

import torch

from lit_emergence.physics.config import SimulationConfig, lattice_shape
from lit_emergence.physics.state import ParticleState


def initial_state(
    config: SimulationConfig,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ParticleState:
    """Random non-overlapping start states for a batch of scenes.

    Random numbers are drawn in float64 on the generator's device (CPU without one) and then
    moved, so a seeded generator gives the same scenes on any device and in any dtype (up to
    the final rounding).

    Args:
        config: Settings; validated first.
        batch_size: Number of scenes ``B``.
        generator: Source of randomness; ``None`` uses torch's global generator.
        device: Device of the returned tensors (default CPU).
        dtype: Floating dtype of the returned tensors.

    Returns:
        A :class:`~lit_emergence.physics.state.ParticleState` with positions and velocities
        ``(B, N, 2)``, radii and masses ``(B, N)``.

    Raises:
        ValueError: If the config is invalid or ``batch_size < 1``.

    """
    config.validate()
    if batch_size < 1:
        raise ValueError(f"initial_state: batch_size={batch_size} must be >= 1")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    draw = {"generator": generator, "device": draw_device, "dtype": torch.float64}
    n = config.num_particles
    gap = config.init_gap * config.radius
    columns, rows = lattice_shape(config.box_width, config.box_height, config.lattice_pitch)
    cell_width, cell_height = config.box_width / columns, config.box_height / rows

    column_centres = (torch.arange(columns, **_no_gen(draw)) + 0.5) * cell_width
    row_centres = (torch.arange(rows, **_no_gen(draw)) + 0.5) * cell_height
    sites = torch.cartesian_prod(column_centres, row_centres)  # (S, 2)
    # A random permutation per scene via argsort of uniforms; its first N entries are the subset.
    chosen = torch.rand(batch_size, sites.shape[0], **draw).argsort(dim=1)[:, :n]  # (B, N)
    jitter = (2 * torch.rand(batch_size, n, 2, **draw) - 1) * (gap / 4)
    positions = sites[chosen] + jitter  # (B, N, 2)
    spread = config.radius_spread * (2 * torch.rand(batch_size, n, **draw) - 1)
    radii = config.radius * (1 + spread)  # (B, N)
    masses = config.mass * (radii / config.radius) ** 2
    velocities = config.init_speed * torch.randn(batch_size, n, 2, **draw)

    def finish(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=device or "cpu", dtype=dtype)

    return ParticleState(
        positions=finish(positions),
        velocities=finish(velocities),
        radii=finish(radii),
        masses=finish(masses),
    )


def _no_gen(draw: dict) -> dict:
    return {"device": draw["device"], "dtype": draw["dtype"]}
