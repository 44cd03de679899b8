"""Collision-detection score of attention heads, impact queries and head classes.

The score of head (l, h) is the mean, over the queries that have at least one partner, of the
attention mass that the query puts on its partners (definition in docs/metrics.md). Who is
a partner is the caller's choice of ``pair_mask``; three variants are standard:

- ``score`` (default column): ``pair_mask = neighbour_mask(positions, radii, tolerance)``,
  the particles within ``(R_i + R_j)(1 + tolerance)`` at the input frame;
- ``strict``: ``pair_mask = contacts``, the ground-truth pairs that touched during the
  predicted interval;
- ``impact``: ``pair_mask = contacts`` and ``query_mask = impact_queries(...)``, only the
  particles whose velocity change departs from free fall.

The score per band of query height (:func:`band_collision_score`) splits the queries by the
height of their centre into equal bands (band 0 at the floor): the paper's first phase, in which
a head detects collisions only below some height, shows as low bands near 1 and high bands not.

A head that attends only to partners scores 1; a head uniform over the ``N - 1`` other
particles scores the mean of ``#partners_i / (N - 1)``; attention on self counts as off-partner.

Shapes: B scenes, L layers, H heads per layer, N particles per scene. Attention is
(B, L, H, N, N), ``attention[b, l, h, i, j]`` the weight of query ``i`` on key ``j``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lit_emergence.functional._pairs import (
    check_attention,
    check_mask,
    check_positions,
    scene_chunks,
    valid_pairs,
)
from lit_emergence.records.schema import HEAD_CLASSES

__all__ = [
    "HEAD_CLASSES",
    "CollisionStatistics",
    "band_collision_score",
    "classify_heads",
    "collision_score",
    "collision_score_statistics",
    "grouped_collision_score_statistics",
    "head_class_names",
    "height_bands",
    "impact_queries",
]


class CollisionStatistics(NamedTuple):
    """Sufficient statistics of the collision score; sums over scenes and ranks add up.

    Attributes:
        sum_mass: (L, H) float64, sum over the counted queries of their attention mass on
            partners.
        count: (L, H) float64, number of counted queries (the same for every head).

    """

    sum_mass: Tensor
    count: Tensor


def collision_score_statistics(
    attention: Tensor,
    pair_mask: Tensor,
    query_mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> CollisionStatistics:
    """Sum of per-query partner attention mass, and the number of queries, per head.

    A query ``(b, i)`` is counted when it is real, has at least one partner ``j != i`` (real,
    ``pair_mask[b, i, j]``) and, if given, ``query_mask[b, i]``. Its mass is
    ``m_i = sum_j attention[b, l, h, i, j] pair_mask[b, i, j]`` over real ``j != i``. Entries of
    the attention outside counted pairs are never read into a sum (NaN there is harmless).

    Args:
        attention: (B, L, H, N, N) attention patterns (rows normally sum to 1).
        pair_mask: (B, N, N) bool, True where ``j`` is a partner of query ``i``; the diagonal
            and pairs with padding are ignored.
        query_mask: Optional (B, N) bool restricting the queries (e.g. impact queries).
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        :class:`CollisionStatistics` ``(sum_mass, count)``, both (L, H) float64 on the device
        of ``attention``.

    Raises:
        ValueError: For wrongly shaped or typed inputs.

    """
    sum_mass, count = _partner_mass_statistics(
        attention, pair_mask, query_mask, valid, None, 1, "collision_score_statistics"
    )
    return CollisionStatistics(sum_mass[..., 0], count[..., 0])


def grouped_collision_score_statistics(
    attention: Tensor,
    pair_mask: Tensor,
    groups: Tensor,
    num_groups: int,
    query_mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> CollisionStatistics:
    """The statistics of :func:`collision_score_statistics` for each group of queries.

    Group ``g`` holds the queries with ``groups[b, i] == g``; its sums are those of the score
    with ``query_mask & (groups == g)``. Every counted query is in exactly one group, so the
    sums over groups are the ungrouped statistics, and the group scores recombine into the
    score weighted by their counts.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        pair_mask: (B, N, N) bool partners of each query.
        groups: (B, N) integer group of each query, in ``[0, num_groups)`` for real particles.
        num_groups: Number of groups G, >= 1.
        query_mask: Optional (B, N) bool restricting the queries.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        :class:`CollisionStatistics` ``(sum_mass, count)``, both (L, H, G) float64.

    Raises:
        ValueError: For wrongly shaped inputs or group indices out of range.

    """
    return CollisionStatistics(
        *_partner_mass_statistics(
            attention,
            pair_mask,
            query_mask,
            valid,
            groups,
            num_groups,
            "grouped_collision_score_statistics",
        )
    )


def _partner_mass_statistics(
    attention: Tensor,
    pair_mask: Tensor,
    query_mask: Tensor | None,
    valid: Tensor | None,
    groups: Tensor | None,
    num_groups: int,
    name: str,
) -> tuple[Tensor, Tensor]:
    """(L, H, G) sums of partner mass and counts of the counted queries of each group."""
    B, L, H, N, _ = check_attention(attention, name)
    check_mask(pair_mask, (B, N, N), "pair_mask", name)
    check_mask(query_mask, (B, N), "query_mask", name)
    check_mask(valid, (B, N), "valid", name)
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"{name}: num_groups={num_groups!r} must be a positive integer")

    pairs = pair_mask & valid_pairs(valid, B, N, attention.device)  # (B, N, N)
    queries = pairs.any(dim=-1)  # (B, N); a query must have a partner (real, not itself)
    if query_mask is not None:
        queries = queries & query_mask
    if groups is None:
        groups = torch.zeros(B, N, dtype=torch.long, device=attention.device)
    elif groups.shape != (B, N) or groups.is_floating_point() or groups.dtype == torch.bool:
        raise ValueError(
            f"{name}: groups must be an integer tensor of shape {(B, N)}, got "
            f"{groups.dtype} {tuple(groups.shape)}"
        )
    groups = groups.to(device=attention.device, dtype=torch.long)
    counted_groups = groups[queries]
    if counted_groups.numel() and not (
        int(counted_groups.min()) >= 0 and int(counted_groups.max()) < num_groups
    ):
        raise ValueError(f"{name}: groups of counted queries must lie in [0, {num_groups})")

    sum_mass = attention.new_zeros((L, H, num_groups), dtype=torch.float64)
    for chunk in scene_chunks(B, L * H * N * N):
        weights = attention[chunk].to(torch.float64)  # (b, L, H, N, N)
        mass = torch.where(pairs[chunk, None, None], weights, 0.0).sum(dim=-1)  # (b, L, H, N)
        mass = torch.where(queries[chunk, None, None], mass, 0.0)
        # one-hot membership (b, N, G): exact 0/1 weights, so each group sums its own queries
        member = torch.nn.functional.one_hot(groups[chunk].clamp(0, num_groups - 1), num_groups)
        sum_mass += torch.einsum("blhn,bng->lhg", mass, member.to(torch.float64))
    count = torch.bincount(counted_groups, minlength=num_groups).to(torch.float64)  # (G,)
    return sum_mass, count.expand(L, H, num_groups).clone()


def collision_score(
    attention: Tensor,
    pair_mask: Tensor,
    query_mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Collision-detection score per head: mean partner attention mass over counted queries.

    See :func:`collision_score_statistics` for which queries count and the module docstring
    for the three standard choices of ``pair_mask`` / ``query_mask``.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        pair_mask: (B, N, N) bool partners of each query.
        query_mask: Optional (B, N) bool restricting the queries.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (L, H) float64 scores in ``[0, 1]`` for rows that sum to 1; NaN when no query counts.

    """
    sum_mass, count = collision_score_statistics(attention, pair_mask, query_mask, valid)
    return sum_mass / count  # 0 / 0 = NaN: no query to average over


def height_bands(positions: Tensor, box_height: float, num_bands: int = 4) -> Tensor:
    """Band of each particle's height: ``num_bands`` equal bands over ``[0, box_height]``.

    Band ``k`` holds the centres with ``k h <= y < (k + 1) h``, ``h = box_height / num_bands``;
    band 0 is at the floor (``y = 0``). Centres outside the box (overlap with a wall, or the
    garbage coordinates of padding) go to the nearest band.

    Args:
        positions: (B, N, 2) particle centres, ``y`` up.
        box_height: Height of the box, > 0.
        num_bands: Number of bands K, >= 1.

    Returns:
        (B, N) int64 bands in ``[0, K)``.

    Raises:
        ValueError: For a non-positive ``box_height`` or ``num_bands`` or bad ``positions``.

    """
    name = "height_bands"
    check_positions(positions, name)
    if positions.ndim != 3 or positions.shape[-1] < 2:
        raise ValueError(
            f"{name}: positions must be (B, N, 2) centres (y up), got {tuple(positions.shape)}"
        )
    if not box_height > 0:
        raise ValueError(f"{name}: box_height={box_height} must be > 0")
    if not isinstance(num_bands, int) or num_bands < 1:
        raise ValueError(f"{name}: num_bands={num_bands!r} must be a positive integer")
    fraction = torch.nan_to_num(positions[..., 1].to(torch.float64) / box_height)
    return (fraction * num_bands).floor().clamp(0, num_bands - 1).to(torch.long)


def band_collision_score(
    attention: Tensor,
    pair_mask: Tensor,
    positions: Tensor,
    box_height: float,
    num_bands: int = 4,
    query_mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Collision score per band of query height: the score over the queries of each band.

    The queries are split by the height of their centre (:func:`height_bands`); each band's
    score is the collision score with the queries of that band only. The count-weighted mean
    of the band scores is the score (:func:`grouped_collision_score_statistics`).

    Args:
        attention: (B, L, H, N, N) attention patterns.
        pair_mask: (B, N, N) bool partners of each query.
        positions: (B, N, 2) particle centres (the heights of the queries).
        box_height: Height of the box, > 0.
        num_bands: Number of equal bands K, band 0 at the floor.
        query_mask: Optional (B, N) bool restricting the queries.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (L, H, K) float64 scores; NaN for a band without a counted query.

    """
    bands = height_bands(positions, box_height, num_bands)
    sum_mass, count = grouped_collision_score_statistics(
        attention, pair_mask, bands, num_bands, query_mask, valid
    )
    return sum_mass / count  # 0 / 0 = NaN: no query in the band


def impact_queries(
    velocity_change: Tensor,
    frame_interval: float,
    gravity: float,
    contacts: Tensor,
    threshold: float = 0.5,
    scale: float | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Particles whose velocity change over the interval departs from free fall, in contact.

    A particle is an impact query when ``|dv - (0, -gravity * frame_interval)| > threshold *
    scale`` and it has at least one (real, other) contact partner in ``contacts``. The default
    ``scale`` is the free-fall velocity change of one frame, ``gravity * frame_interval``:
    with ``threshold = 0.5`` a particle counts when contact forces changed its velocity by more
    than half of what gravity alone does in one frame (a disc resting on the pile, dv = 0,
    departs by a full ``g dt`` and counts). Pass ``scale`` explicitly for ``gravity = 0`` or
    for a data-derived scale (e.g. the typical ``|dv|`` of the training split).

    Args:
        velocity_change: (B, N, 2) ``v(t + 1) - v(t)`` in simulation units (denormalise a
            normalised target first).
        frame_interval: Time between the frames, > 0.
        gravity: Gravitational acceleration (acts along -y), >= 0.
        contacts: (B, N, N) bool ground-truth contacts during the interval.
        threshold: Departure, in units of ``scale``, above which a particle counts; >= 0.
        scale: Velocity scale; None for ``gravity * frame_interval``.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (B, N) bool, False for padded particles.

    Raises:
        ValueError: For a non-positive ``frame_interval`` or ``scale``, negative ``gravity`` or
            ``threshold``, or wrongly shaped inputs.

    """
    name = "impact_queries"
    if velocity_change.ndim != 3 or velocity_change.shape[-1] != 2:
        shape = tuple(velocity_change.shape)
        raise ValueError(f"{name}: velocity_change must have shape (B, N, 2), got {shape}")
    B, N, _ = velocity_change.shape
    check_mask(contacts, (B, N, N), "contacts", name)
    check_mask(valid, (B, N), "valid", name)
    if not frame_interval > 0:
        raise ValueError(f"{name}: frame_interval={frame_interval} must be > 0")
    if not gravity >= 0:
        raise ValueError(f"{name}: gravity={gravity} must be >= 0 (it acts along -y)")
    if not threshold >= 0:
        raise ValueError(f"{name}: threshold={threshold} must be >= 0; e.g. use 0.5")
    if scale is None:
        scale = gravity * frame_interval
        if not scale > 0:
            raise ValueError(
                f"{name}: gravity={gravity} gives no free-fall velocity scale; pass scale > 0"
            )
    elif not scale > 0:
        raise ValueError(f"{name}: scale={scale} must be > 0 (or None for gravity * dt)")

    free_fall = velocity_change.new_tensor([0.0, -gravity * frame_interval])  # (2,)
    departure = torch.linalg.vector_norm(velocity_change - free_fall, dim=-1)  # (B, N)
    in_contact = (contacts & valid_pairs(valid, B, N, contacts.device)).any(dim=-1)  # (B, N)
    return (departure > threshold * scale) & in_contact


def classify_heads(
    scores: Tensor, true_threshold: float = 0.9, partial_threshold: float = 0.5
) -> Tensor:
    """Class of each head from its collision score: 2 "true", 1 "partial", 0 "none".

    ``score >= true_threshold`` is a true collision-detection head, ``partial_threshold <=
    score < true_threshold`` a partial one, anything lower (or NaN) none.
    ``HEAD_CLASSES[code]`` is the name; :func:`head_class_names` maps a whole table.

    Args:
        scores: Scores of any shape, typically (L, H) (tensor or array-like).
        true_threshold: Lowest score of a true head.
        partial_threshold: Lowest score of a partial head.

    Returns:
        int64 codes with the shape of ``scores``.

    Raises:
        ValueError: Unless ``0 < partial_threshold <= true_threshold <= 1``.

    """
    if not 0 < partial_threshold <= true_threshold <= 1:
        raise ValueError(
            f"classify_heads: need 0 < partial_threshold <= true_threshold <= 1, got "
            f"partial_threshold={partial_threshold}, true_threshold={true_threshold}"
        )
    scores = torch.as_tensor(scores)
    codes = (scores >= partial_threshold).long() + (scores >= true_threshold).long()
    return codes  # NaN compares False: class 0


def head_class_names(codes: Tensor) -> list:
    """Turn codes from :func:`classify_heads` into nested lists of names.

    Args:
        codes: int codes in ``{0, 1, 2}``, e.g. (L, H).

    Returns:
        Nested lists of ``"none"``, ``"partial"``, ``"true"`` with the shape of ``codes``
        (a single name for a 0-d tensor).

    """
    values = torch.as_tensor(codes).tolist()

    def name(value: int | list) -> str | list:
        return [name(v) for v in value] if isinstance(value, list) else HEAD_CLASSES[value]

    return name(values)
