"""Attention-distance correlation of attention heads: Pearson r, G(r) and its length.

Over the off-diagonal pairs of real particles of every scene (pooled over the batch):

- Pearson correlation between ``A_ij`` and ``d_ij`` per head (negative for local heads);
- connected correlation function ``G(r) = E[A_ij 1{d_ij <= r}] - E[A_ij] E[1{d_ij <= r}]``
  on a grid of radii ``r``, the expectation over the same pairs. ``G(r) > 0`` where a head
  puts more than its average attention on pairs within ``r``; it vanishes beyond the largest
  distance in the data;
- the correlation length of ``G`` (:func:`correlation_length`): the radius beyond contact at
  which ``G`` has fallen to half its contact value.

On a fixed probe set, ``G`` at the contact radius of the collision score is an affine function
of that score (rows of attention sum to 1, so ``E[A]`` is fixed, and ``E[A 1{d <= r_c}]`` is
the score times the fixed fraction of counted queries); ``G`` at other radii, the Pearson r and
the correlation length are not functions of the score.

Both are computed from float64 sufficient statistics (sums) per [layer, head], which add up
over batches and ranks; the ``*_from_statistics`` functions turn sums into results and are
used by the torchmetrics classes too. The diagonal (self-attention) is always left out.

Shapes: B scenes, L layers, H heads per layer, N particles per scene, R radii in the grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_emergence.functional._pairs import (
    check_attention,
    check_mask,
    check_positions,
    scene_chunks,
    valid_pairs,
)
from lit_emergence.functional.geometry import pairwise_distances

__all__ = [
    "PEARSON_KEYS",
    "RADIAL_KEYS",
    "attention_distance_correlation",
    "attention_distance_statistics",
    "connected_correlation",
    "connected_correlation_from_statistics",
    "correlation_from_statistics",
    "correlation_length",
    "default_r_grid",
]

#: Statistics of the Pearson correlation, each (L, H) float64.
PEARSON_KEYS: tuple[str, ...] = ("n", "sum_a", "sum_d", "sum_aa", "sum_dd", "sum_ad")
#: Statistics of G(r): ``sum_ind`` (R,) pairs within each r, ``sum_a_ind`` (L, H, R).
RADIAL_KEYS: tuple[str, ...] = ("sum_ind", "sum_a_ind")

#: A variance below this fraction of the second moment is round-off of the float64 raw moments
#: (about 1e-16 relative, times the summation's growth) and counts as a constant variable.
RELATIVE_VARIANCE_FLOOR = 1e-11


def default_r_grid(
    radius: float,
    max_distance: float | None = None,
    num: int = 32,
    start: float = 0.5,
    stop: float = 6.0,
    spacing: str = "linear",
    device: torch.device | str | None = None,
) -> Tensor:
    """Grid of radii for G(r), in units of the contact distance ``2 * radius``.

    ``num`` points from ``start * 2 radius`` to ``stop * 2 radius`` (default 0.5 to 6 contact
    distances: from deep overlap, through first contact at 1, to a few neighbour shells),
    evenly (``"linear"``) or log-evenly (``"geometric"``) spaced. ``stop`` is lowered to
    ``max_distance`` when that is smaller (e.g. the box diagonal), since ``G(r) = 0`` for any
    ``r`` beyond the largest distance.

    Args:
        radius: Disc radius (the mean radius for polydisperse discs); > 0.
        max_distance: Optional largest distance worth probing, in the units of ``radius``.
        num: Number of radii, >= 1 (1 gives the single radius ``start * 2 radius``).
        start: First radius in contact distances, > 0.
        stop: Last radius in contact distances, > ``start``.
        spacing: ``"linear"`` or ``"geometric"``.
        device: Device of the result.

    Returns:
        (R,) float64 strictly increasing radii.

    Raises:
        ValueError: For out-of-range arguments.

    """
    name = "default_r_grid"
    if not radius > 0:
        raise ValueError(f"{name}: radius={radius} must be > 0")
    if num < 1:
        raise ValueError(f"{name}: num={num} must be >= 1")
    if not 0 < start < stop:
        raise ValueError(f"{name}: need 0 < start < stop, got start={start}, stop={stop}")
    if spacing not in ("linear", "geometric"):
        raise ValueError(f"{name}: spacing={spacing!r} is unknown; use 'linear' or 'geometric'")
    contact = 2.0 * radius
    low, high = start * contact, stop * contact
    if max_distance is not None:
        if not max_distance > low:
            raise ValueError(
                f"{name}: max_distance={max_distance} must exceed the first radius {low}; "
                "lower start or pass a larger max_distance"
            )
        high = min(high, max_distance)
    if num == 1:
        return torch.tensor([low], dtype=torch.float64, device=device)
    if spacing == "linear":
        return torch.linspace(low, high, num, dtype=torch.float64, device=device)
    return torch.logspace(
        math.log10(low), math.log10(high), num, dtype=torch.float64, device=device
    )


def _check_r_grid(r_grid: Tensor, name: str) -> None:
    if r_grid.ndim != 1 or r_grid.numel() < 1 or not r_grid.is_floating_point():
        raise ValueError(
            f"{name}: r_grid must be a non-empty 1-D floating tensor, got "
            f"{r_grid.dtype} {tuple(r_grid.shape)}; see default_r_grid"
        )
    if not bool(torch.isfinite(r_grid).all()) or bool((r_grid[1:] < r_grid[:-1]).any()):
        raise ValueError(f"{name}: r_grid must be finite and sorted ascending")


def attention_distance_statistics(
    attention: Tensor,
    positions: Tensor,
    valid: Tensor | None = None,
    r_grid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Float64 sums over off-diagonal pairs of real particles, per [layer, head].

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        valid: Optional (B, N) bool, True for real particles.
        r_grid: Optional (R,) ascending radii (same units as ``positions``) for G(r).

    Returns:
        Dict of float64 tensors on the device of ``attention``, all additive over batches:
        ``n`` (number of pairs), ``sum_a``, ``sum_d``, ``sum_aa``, ``sum_dd``, ``sum_ad``, each
        (L, H) (``n``, ``sum_d``, ``sum_dd`` are the same for every head); with ``r_grid`` also
        ``sum_ind`` (R,), the number of pairs with ``d <= r``, and ``sum_a_ind`` (L, H, R), the
        attention on those pairs.

    Raises:
        ValueError: For wrongly shaped inputs or an unsorted ``r_grid``.

    """
    name = "attention_distance_statistics"
    B, L, H, N, _ = check_attention(attention, name)
    if check_positions(positions, name) != (B, N):
        raise ValueError(
            f"{name}: positions {tuple(positions.shape)} do not match attention "
            f"{tuple(attention.shape)}; need (B, N) = {(B, N)} leading dimensions"
        )
    check_mask(valid, (B, N), "valid", name)
    if r_grid is not None:
        _check_r_grid(r_grid, name)
        r_grid = r_grid.to(device=attention.device, dtype=torch.float64)

    device = attention.device
    pairs = valid_pairs(valid, B, N, device)  # (B, N, N), diagonal always out
    distances = pairwise_distances(positions.to(device=device, dtype=torch.float64))  # (B, N, N)

    stats = {key: torch.zeros(L, H, dtype=torch.float64, device=device) for key in PEARSON_KEYS}
    if r_grid is not None:
        R = r_grid.numel()
        stats["sum_ind"] = torch.zeros(R, dtype=torch.float64, device=device)
        stats["sum_a_ind"] = torch.zeros(L, H, R, dtype=torch.float64, device=device)

    for chunk in scene_chunks(B, L * H * N * N):
        selected = pairs[chunk]  # (b, N, N)
        d = distances[chunk][selected]  # (P,) the chunk's P pairs
        a = attention[chunk].movedim(0, 2)[:, :, selected].to(torch.float64)  # (L, H, P)
        stats["n"] += d.numel()
        stats["sum_d"] += d.sum()
        stats["sum_dd"] += d.square().sum()
        stats["sum_a"] += a.sum(dim=-1)
        stats["sum_aa"] += a.square().sum(dim=-1)
        stats["sum_ad"] += a @ d
        if r_grid is not None:
            # shell k holds the pairs with r_grid[k-1] < d <= r_grid[k] (shell R: beyond the
            # grid); 1{d <= r_grid[k]} is membership of shells 0..k, hence the cumulative sums
            shell = torch.bucketize(d, r_grid)  # (P,) in [0, R]
            per_shell = a.new_zeros(L * H, R + 1).index_add_(1, shell, a.reshape(L * H, -1))
            stats["sum_a_ind"] += per_shell[:, :R].cumsum(dim=1).view(L, H, R)
            pairs_per_shell = torch.bincount(shell, minlength=R + 1)[:R]
            stats["sum_ind"] += pairs_per_shell.cumsum(dim=0).to(torch.float64)
    return stats


def correlation_from_statistics(stats: dict[str, Tensor]) -> Tensor:
    """Pearson correlation between attention and distance, from the statistics' sums.

    The sums are those of :func:`attention_distance_statistics`;
    ``r = cov(A, d) / sqrt(var(A) var(d))`` with population moments from the raw sums. A
    variable whose variance is below ``1e-11`` of its second moment (round-off of the
    float64 sums; e.g. an exactly uniform head) has no correlation: NaN, as with
    ``scipy.stats.pearsonr`` on constant input.

    Args:
        stats: Dict with the (L, H) sums ``n, sum_a, sum_d, sum_aa, sum_dd, sum_ad``.

    Returns:
        (L, H) float64 in ``[-1, 1]``; NaN where there are no pairs or no variance.

    """
    n = stats["n"]
    mean_a, mean_d = stats["sum_a"] / n, stats["sum_d"] / n
    moment_aa, moment_dd = stats["sum_aa"] / n, stats["sum_dd"] / n
    var_a = moment_aa - mean_a.square()
    var_d = moment_dd - mean_d.square()
    covariance = stats["sum_ad"] / n - mean_a * mean_d
    degenerate = (var_a <= RELATIVE_VARIANCE_FLOOR * moment_aa) | (
        var_d <= RELATIVE_VARIANCE_FLOOR * moment_dd
    )
    r = covariance / (var_a.clamp_min(0.0) * var_d.clamp_min(0.0)).sqrt()
    return r.clamp(-1.0, 1.0).masked_fill(degenerate, float("nan"))


def connected_correlation_from_statistics(stats: dict[str, Tensor]) -> Tensor:
    """Compute the connected correlation ``G(r)`` from the statistics' sums.

    The sums are those of :func:`attention_distance_statistics`;
    ``G(r) = sum_a_ind / n - (sum_a / n) (sum_ind / n)``.

    Args:
        stats: Dict with ``n``, ``sum_a`` (L, H), ``sum_ind`` (R,) and ``sum_a_ind`` (L, H, R).

    Returns:
        (L, H, R) float64; NaN where there are no pairs.

    Raises:
        ValueError: If the radial sums are missing (statistics computed without ``r_grid``).

    """
    missing = [key for key in RADIAL_KEYS if key not in stats]
    if missing:
        raise ValueError(
            f"connected_correlation_from_statistics: statistics lack {missing}; "
            "compute them with attention_distance_statistics(..., r_grid=...)"
        )
    n = stats["n"][..., None]  # (L, H, 1)
    mean_a = stats["sum_a"][..., None] / n  # (L, H, 1)
    fraction_within = stats["sum_ind"] / n  # (L, H, R)
    return stats["sum_a_ind"] / n - mean_a * fraction_within


def attention_distance_correlation(
    attention: Tensor, positions: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Pearson correlation between ``A_ij`` and ``d_ij`` per head, pooled over the batch.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (L, H) float64; see :func:`correlation_from_statistics`.

    """
    return correlation_from_statistics(attention_distance_statistics(attention, positions, valid))


def connected_correlation(
    attention: Tensor, positions: Tensor, r_grid: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Compute the connected correlation ``G(r)`` per head on ``r_grid``, pooled over the batch.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        r_grid: (R,) ascending radii in the units of ``positions`` (see :func:`default_r_grid`).
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (L, H, R) float64; see :func:`connected_correlation_from_statistics`.

    """
    stats = attention_distance_statistics(attention, positions, valid, r_grid)
    return connected_correlation_from_statistics(stats)


def correlation_length(
    connected: Tensor, r_grid: Tensor, contact_index: int, fraction: float = 0.5
) -> Tensor:
    """Radius beyond contact at which ``G(r)`` first falls to ``fraction`` of its contact value.

    Starting at ``g_c = G(r_grid[contact_index])`` and walking out along the grid, the first
    radius ``r_k`` with ``G(r_k) <= fraction * g_c`` is found and the crossing is interpolated
    linearly between ``r_{k-1}`` and ``r_k``. It measures how far the excess attention of a
    local head reaches: a head that attends only to its contact partners keeps
    ``E[A 1{d <= r}]`` constant beyond contact while the distance-blind term grows, so its
    length is set by the probe set's pair distances; a head whose attention decays smoothly
    with distance has a longer one. It depends on ``G`` at radii other than contact, i.e. on
    how the attention that misses the partners is spread, so it is not a function of the
    collision score.

    Args:
        connected: (..., R) ``G`` on ``r_grid`` (e.g. :func:`connected_correlation`'s (L, H, R)).
        r_grid: (R,) ascending radii.
        contact_index: Index of the contact radius in ``r_grid``.
        fraction: Level, relative to the contact value, in (0, 1).

    Returns:
        (...) float64 radii in the units of ``r_grid``; NaN where ``g_c`` is not positive (no
        excess attention at contact: no local structure to measure) or ``G`` never falls to
        the level on the grid.

    Raises:
        ValueError: For mismatched shapes, an ``r_grid`` that is not sorted, a
            ``contact_index`` outside the grid, or ``fraction`` outside (0, 1).

    """
    name = "correlation_length"
    _check_r_grid(r_grid, name)
    R = r_grid.numel()
    if connected.ndim < 1 or connected.shape[-1] != R:
        raise ValueError(
            f"{name}: connected {tuple(connected.shape)} must end in the {R} radii of r_grid"
        )
    if not 0 <= contact_index < R:
        raise ValueError(f"{name}: contact_index={contact_index} is outside the grid of {R} radii")
    if not 0 < fraction < 1:
        raise ValueError(f"{name}: fraction={fraction} must be in (0, 1); e.g. use 0.5")
    connected = connected.to(torch.float64)
    radii = r_grid.to(device=connected.device, dtype=torch.float64)
    contact_value = connected[..., contact_index]
    if contact_index == R - 1:  # no radius beyond contact to fall at
        return torch.full_like(contact_value, torch.nan)
    level = fraction * contact_value
    beyond = connected[..., contact_index + 1 :]  # (..., R') radii past contact
    below = beyond <= level[..., None]  # NaN compares False: never "below"
    found = below.any(dim=-1) & (contact_value > 0)
    # index of the first radius at or below the level (argmax returns the first maximum)
    upper = below.to(torch.uint8).argmax(dim=-1, keepdim=True) + contact_index + 1
    upper = upper.clamp_max(R - 1)
    g_upper = connected.gather(-1, upper).squeeze(-1)
    g_lower = connected.gather(-1, upper - 1).squeeze(-1)
    r_upper, r_lower = radii[upper.squeeze(-1)], radii[upper.squeeze(-1) - 1]
    # G(r_lower) > level >= G(r_upper) where found, so the denominator is positive there
    step = torch.where(found, g_lower - g_upper, 1.0)
    length = r_lower + (g_lower - level) / step * (r_upper - r_lower)
    return torch.where(found, length, torch.nan)
