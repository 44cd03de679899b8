"""Per-query attention-distance observables: mean attention distance and per-query correlations.

For each real query particle ``i`` of each scene, over its keys ``K(i)`` (the other real
particles of the scene; the diagonal is always left out):

- ``mean_distance``: the attention-weighted mean distance to the keys,
  ``D_i = sum_{j in K(i)} A_ij d_ij / sum_{j in K(i)} A_ij`` (the "mean attention distance"
  of vision-transformer analyses). Renormalised over ``K(i)``, so that attention a head puts
  on the query itself (possible without ``mask_self``) does not read as distance 0;
- ``pearson``: the Pearson correlation of ``A_ij`` with ``d_ij`` over ``j in K(i)``;
- ``spearman``: the Spearman rank correlation over the same keys (average ranks for ties, as
  ``scipy.stats.spearmanr``).

Each is averaged over the queries where it is defined, every query weighing the same. The
pooled Pearson r of :mod:`~lit_emergence.functional.attention_distance` mixes pairs of all
queries, so differences between queries (a query in the dense pile has many near keys, one in
free fall none) dominate it; here each query is compared with itself only.

None of them is a function of the collision score: the score is the attention mass on the
partners within contact distance, and all three depend on how the rest of the attention is
spread over distance (two heads with the same partner mass can put the remainder on the
nearest non-partners or on the farthest particles), and the correlations also on the ordering
of the attention among partners.

The sufficient statistics are, per [layer, head], the sum of the per-query values and the
number of queries where each is defined: they add up over batches and ranks, so the averages
are exact under DDP (a rank correlation is not reducible from pooled moments, but per-query
values are).

Shapes: B scenes, L layers, H heads per layer, N particles per scene.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from lit_emergence.functional.attention_distance import RELATIVE_VARIANCE_FLOOR
from lit_emergence.functional.geometry import pairwise_distances

__all__ = [
    "QUERY_OBSERVABLES",
    "mean_attention_distance",
    "query_correlation",
    "query_distance_from_statistics",
    "query_distance_statistics",
]

#: The per-query observables, in the order of their history columns.
QUERY_OBSERVABLES: tuple[str, ...] = ("mean_distance", "pearson", "spearman")

# float64 (b, L, H, N, N) temporaries alive at once in one chunk (values, centred values,
# ranks, sort buffers): bounds the memory of a chunk to a few times MAX_CHUNK_ELEMENTS.
_TEMPORARIES = 8


def check_observables(observables: Sequence[str], name: str) -> tuple[str, ...]:
    """Return ``observables`` as a tuple, or raise ValueError unless a subset of the known."""
    observables = tuple(observables)
    unknown = [o for o in observables if o not in QUERY_OBSERVABLES]
    if unknown or not observables:
        raise ValueError(
            f"{name}: observables {list(observables)} must be a non-empty subset of "
            f"{list(QUERY_OBSERVABLES)}"
        )
    return observables


class _Centred(NamedTuple):
    """A per-scene variable over each query's keys, centred per query (zero off the keys)."""

    centred: Tensor  # (b, N, N)
    variance: Tensor  # (b, N) sum of squares of the centred values
    defined: Tensor  # (b, N) at least two keys and not constant to round-off


def _centre(values: Tensor, keys: Tensor, count: Tensor) -> _Centred:
    """Centre ``values`` over the keys of each query (two-pass: the row is in memory)."""
    values = torch.where(keys, values, 0.0)
    mean = values.sum(dim=-1, keepdim=True) / count.clamp_min(1.0)[..., None]
    centred = torch.where(keys, values - mean, 0.0)
    variance = centred.square().sum(dim=-1)
    floor = RELATIVE_VARIANCE_FLOOR * values.square().sum(dim=-1)
    return _Centred(centred, variance, (count >= 2) & (variance > floor))


def _correlation(
    x: Tensor, x_sum: Tensor, x_square_sum: Tensor, other: _Centred, count: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-query Pearson r of a per-head variable ``x`` with a centred per-scene one.

    Args:
        x: (b, L, H, N, N) values; finite, any value off the keys (``other`` is 0 there).
        x_sum: (b, L, H, N) or broadcastable: the sum of ``x`` over the keys.
        x_square_sum: Likewise, the sum of ``x**2`` over the keys.
        other: The per-scene variable, centred over the keys.
        count: (b, N) keys per query.

    The cross moment is ``sum_j x_j y_j`` with ``y`` centred, which equals
    ``sum_j (x_j - mean x) y_j`` since ``y`` sums to 0 (one batched matrix product); the
    variance of ``x`` comes from its raw sums, whose cancellation (a constant row) is caught
    by the relative floor.

    Returns:
        ``(r, defined)``, both (b, L, H, N).
    """
    cross = torch.einsum("blhij,bij->blhi", x, other.centred)
    variance = x_square_sum - x_sum.square() / count.clamp_min(1.0)[:, None, None]
    defined = other.defined[:, None, None] & (variance > RELATIVE_VARIANCE_FLOOR * x_square_sum)
    r = cross / (variance.clamp_min(0.0) * other.variance[:, None, None]).sqrt()
    return torch.where(defined, r.clamp(-1.0, 1.0), 0.0), defined


def _average_ranks(x: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """1-based ranks of ``x`` among the ``keys`` of each row, ties given their average rank.

    One sort per row: a value's rank is its position in the sorted row, except in a run of
    equal values spanning sorted positions ``first..last``, each of which gets
    ``(first + last) / 2`` (worked out only for the rows that have such a run, e.g. softmax
    weights that underflowed to 0). The ranks are scattered back to the original order.
    Non-keys are moved to ``+inf`` first, so they sort after every key and do not shift the
    keys' ranks; their own ranks are meaningless (but finite). Ranking needs no float64: it
    runs in ``x``'s own precision (half types go to float32, which holds them exactly), so
    ties stay ties.

    Returns:
        ``(ranks, square_sum)``: the float64 ranks, shaped like ``x``, and the sum of the
        squared ranks over each row's keys, ``n (n + 1) (2 n + 1) / 6`` for ``n`` keys
        without ties (computed from the ranks only in the rows with ties).
    """
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    ordered, order = torch.where(keys, x, torch.inf).sort(dim=-1)
    n = x.shape[-1]
    position = torch.arange(1, n + 1, device=x.device, dtype=torch.float64)
    ranks = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    ranks.scatter_(-1, order, position.expand(ordered.shape))  # the ranks if nothing ties
    count = keys.sum(dim=-1).to(torch.float64)
    square_sum = count * (count + 1.0) * (2.0 * count + 1.0) / 6.0
    equal = ordered[..., 1:] == ordered[..., :-1]  # (..., n - 1) equal to the one before
    tied = equal.any(dim=-1)  # rows with a tie (padding's +inf ties too: harmless, rarer)
    if bool(tied.any()):
        starts = torch.ones(int(tied.sum()), n, dtype=torch.bool, device=x.device)
        starts[:, 1:] = ~equal[tied]  # first of its run of equal values
        ends = torch.ones_like(starts)  # last of its run
        ends[:, :-1] = starts[:, 1:]
        place = position.expand(starts.shape)
        first = torch.where(starts, place, 0.0).cummax(dim=-1).values
        last = torch.where(ends, place, n + 1.0).flip(-1).cummin(dim=-1).values.flip(-1)
        average = (first + last) / 2.0
        ranks[tied] = torch.empty_like(average).scatter_(-1, order[tied], average)
        # the keys are the finite values, first in sorted order
        finite = ordered[tied].isfinite()
        square_sum[tied] = torch.where(finite, average, 0.0).square().sum(dim=-1)
    return ranks, square_sum


def query_distance_statistics(
    attention: Tensor,
    positions: Tensor,
    valid: Tensor | None = None,
    observables: Sequence[str] = QUERY_OBSERVABLES,
) -> dict[str, Tensor]:
    """Float64 sums of the per-query observables and their counts, per [layer, head].

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        valid: Optional (B, N) bool, True for real particles.
        observables: Which of :data:`QUERY_OBSERVABLES` to compute.

    Returns:
        Dict of (L, H) float64 tensors on the device of ``attention``, additive over batches:
        for each observable ``o``, ``sum_<o>`` (sum of the per-query values) and ``count_<o>``
        (number of queries where it is defined: attention on some key for ``mean_distance``;
        two keys and non-constant attention and distances for the correlations).

    Raises:
        ValueError: For wrongly shaped inputs or unknown observables.

    """
    name = "query_distance_statistics"
    B, L, H, N, _ = check_attention(attention, name)
    if check_positions(positions, name) != (B, N):
        raise ValueError(
            f"{name}: positions {tuple(positions.shape)} do not match attention "
            f"{tuple(attention.shape)}; need (B, N) = {(B, N)} leading dimensions"
        )
    check_mask(valid, (B, N), "valid", name)
    observables = check_observables(observables, name)

    device = attention.device
    keys_all = valid_pairs(valid, B, N, device)  # (B, N, N), diagonal always out
    distances_all = pairwise_distances(positions.to(device=device, dtype=torch.float64))
    stats = {
        f"{kind}_{o}": torch.zeros(L, H, dtype=torch.float64, device=device)
        for o in observables
        for kind in ("sum", "count")
    }

    def add(observable: str, values: Tensor, defined: Tensor) -> None:
        # values, defined: (b, L, H, N) per query
        stats[f"sum_{observable}"] += torch.where(defined, values, 0.0).sum(dim=(0, 3))
        stats[f"count_{observable}"] += defined.sum(dim=(0, 3)).to(torch.float64)

    for chunk in scene_chunks(B, _TEMPORARIES * L * H * N * N):
        keys = keys_all[chunk]  # (b, N, N)
        count = keys.sum(dim=-1).to(torch.float64)  # (b, N) keys per query
        distances = torch.where(keys, distances_all[chunk], 0.0)  # (b, N, N)
        weights = attention[chunk]
        a = torch.where(keys[:, None, None], weights.to(torch.float64), 0.0)  # (b, L, H, N, N)
        mass = a.sum(dim=-1)  # (b, L, H, N)
        if "mean_distance" in observables:
            defined = mass > 0
            weighted = torch.einsum("blhij,bij->blhi", a, distances)
            add("mean_distance", weighted / torch.where(defined, mass, 1.0), defined)
        if "pearson" in observables:
            d = _centre(distances, keys, count)
            add("pearson", *_correlation(a, mass, a.square().sum(dim=-1), d, count))
        if "spearman" in observables:
            rank_d = _centre(_average_ranks(distances, keys)[0], keys, count)
            rank_a, rank_square_sum = _average_ranks(
                weights, keys[:, None, None].expand(weights.shape)
            )
            # the average ranks of n keys sum to n (n + 1) / 2 exactly
            rank_sum = (count * (count + 1.0) / 2.0)[:, None, None]
            add("spearman", *_correlation(rank_a, rank_sum, rank_square_sum, rank_d, count))
    return stats


def query_distance_from_statistics(stats: dict[str, Tensor]) -> dict[str, Tensor]:
    """Average each per-query observable over its queries, from the sums.

    Args:
        stats: Dict with ``sum_<o>`` and ``count_<o>`` for some observables ``o`` (from
            :func:`query_distance_statistics`, or their sums over batches and ranks).

    Returns:
        Observable name -> (L, H) float64 average; NaN for a head without a defined query.

    """
    return {
        o: stats[f"sum_{o}"] / stats[f"count_{o}"]  # 0 / 0 = NaN: no query to average
        for o in QUERY_OBSERVABLES
        if f"sum_{o}" in stats
    }


def mean_attention_distance(
    attention: Tensor, positions: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Attention-weighted mean distance of each query to its keys, averaged over queries.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        valid: Optional (B, N) bool, True for real particles.

    Returns:
        (L, H) float64 distances in the units of ``positions``; NaN for a head that puts no
        attention on any other real particle.

    """
    stats = query_distance_statistics(attention, positions, valid, ("mean_distance",))
    return query_distance_from_statistics(stats)["mean_distance"]


def query_correlation(
    attention: Tensor,
    positions: Tensor,
    valid: Tensor | None = None,
    method: str = "pearson",
) -> Tensor:
    """Correlation of attention with distance over each query's keys, averaged over queries.

    Args:
        attention: (B, L, H, N, N) attention patterns.
        positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
        valid: Optional (B, N) bool, True for real particles.
        method: ``"pearson"`` or ``"spearman"`` (rank correlation, average ranks for ties).

    Returns:
        (L, H) float64 in ``[-1, 1]``; NaN for a head without a query where it is defined.

    Raises:
        ValueError: For an unknown ``method`` or wrongly shaped inputs.

    """
    if method not in ("pearson", "spearman"):
        raise ValueError(
            f"query_correlation: method={method!r} is unknown; use 'pearson' or 'spearman'"
        )
    stats = query_distance_statistics(attention, positions, valid, (method,))
    return query_distance_from_statistics(stats)[method]
