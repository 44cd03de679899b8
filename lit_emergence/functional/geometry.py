"""Distances between particle centres and the radius-based neighbour mask.

Shapes: B scenes, N particles per scene. ``valid`` (B, N) bool marks real particles (True)
against padding (False); None means every particle is real.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_emergence.functional._pairs import as_points, check_mask, check_positions, valid_pairs

__all__ = ["neighbour_mask", "pairwise_distances"]


def pairwise_distances(positions: Tensor, valid: Tensor | None = None) -> Tensor:
    """Euclidean distance ``d_ij = |x_i - x_j|`` between every two particles of each scene.

    Computed from coordinate differences (not the ``|x|^2 + |y|^2 - 2 x.y`` expansion), so
    small distances keep full relative precision.

    Args:
        positions: (B, N, 2) particle centres; any (B, N, D) points or (B, N) 1-D positions
            (token index: ``d_ij = |i - j|``) work the same.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (B, N, N) distances in the dtype of ``positions``; the diagonal is 0 and every entry
        that involves a padded particle is ``+inf`` (so padding is never anyone's neighbour,
        whatever garbage its coordinates hold).

    Raises:
        ValueError: For a wrongly shaped ``positions`` or ``valid``.

    """
    B, N = check_positions(positions, "pairwise_distances")
    check_mask(valid, (B, N), "valid", "pairwise_distances")
    points = as_points(positions)
    differences = points[:, :, None, :] - points[:, None, :, :]  # (B, N, N, D)
    distances = torch.linalg.vector_norm(differences, dim=-1)  # (B, N, N)
    if valid is None:
        return distances
    both_real = valid[:, :, None] & valid[:, None, :]  # (B, N, N)
    return distances.masked_fill(~both_real, float("inf"))


def neighbour_mask(
    positions: Tensor,
    radii: Tensor,
    tolerance: float = 0.1,
    valid: Tensor | None = None,
) -> Tensor:
    """Pairs of particles whose discs touch or nearly touch.

    ``j`` is a neighbour of ``i`` when ``d_ij <= (R_i + R_j) (1 + tolerance)``, ``i != j`` and
    both are real particles. With ``tolerance = 0`` this is the set of overlapping (or exactly
    touching) pairs at these positions: the contact set at one instant.

    Args:
        positions: (B, N, 2) particle centres.
        radii: (B, N) disc radii.
        tolerance: Relative slack on the contact distance ``R_i + R_j``; >= 0.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (B, N, N) bool, symmetric, diagonal False, False on every pair with a padded particle.

    Raises:
        ValueError: For a negative ``tolerance`` or wrongly shaped inputs.

    """
    B, N = check_positions(positions, "neighbour_mask")
    if radii.shape != (B, N):
        raise ValueError(
            f"neighbour_mask: radii must have shape (B, N) = {(B, N)}, got {tuple(radii.shape)}"
        )
    if not tolerance >= 0:
        raise ValueError(f"neighbour_mask: tolerance={tolerance} must be >= 0; e.g. use 0.1")
    contact_distance = radii[:, :, None] + radii[:, None, :]  # (B, N, N)
    close = pairwise_distances(positions, valid) <= contact_distance * (1.0 + tolerance)
    return close & valid_pairs(valid, B, N, positions.device)
