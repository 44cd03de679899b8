"""Relation and collision-detection scores of every attention head (also per query-height band)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_emergence.functional.collision import (
    collision_score_statistics,
    grouped_collision_score_statistics,
    height_bands,
)
from lit_emergence.metrics._shape import check_attention_heads, check_heads

__all__ = ["BandCollisionScore", "CollisionScore", "RelationScore"]


class RelationScore(Metric):
    """Mean attention mass that each head puts on a query's related keys, per [layer, head].

    The relation is a (B, N, N) bool mask per batch (contact, previous token, within a radius,
    same object: :mod:`lit_emergence.functional.relations`). Accumulates the sufficient
    statistics of :func:`~lit_emergence.functional.collision.collision_score_statistics`
    (float64 sums, reduced by ``"sum"`` across processes), so splitting a probe set over
    batches or DDP ranks gives the single-call answer up to float64 round-off.

    Example::

        metric = RelationScore(num_layers=2, num_heads=8)
        for batch in probe_batches:
            attention = capture_attention(model, lambda: model(batch["input_ids"]))
            metric.update(attention, previous_token_mask(*batch["input_ids"].shape))
        scores = metric.compute()  # (2, 8)

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Raises:
        ValueError: If ``num_layers`` or ``num_heads`` is not a positive integer.

    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sum_mass: Tensor
    count: Tensor

    def __init__(self, num_layers: int, num_heads: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        check_heads(num_layers, num_heads, type(self).__name__)
        self.num_layers, self.num_heads = num_layers, num_heads
        zeros = torch.zeros(num_layers, num_heads, dtype=torch.float64)
        self.add_state("sum_mass", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(
        self,
        attention: Tensor,
        pair_mask: Tensor,
        query_mask: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> None:
        """Add one batch; arguments as in :func:`~lit_emergence.functional.collision_score`.

        Args:
            attention: (B, L, H, N, N) attention patterns.
            pair_mask: (B, N, N) bool related keys (partners) of each query.
            query_mask: Optional (B, N) bool restricting the queries.
            valid: Optional (B, N) bool, True for real particles.

        """
        check_attention_heads(attention, self.num_layers, self.num_heads, type(self).__name__)
        sum_mass, count = collision_score_statistics(attention, pair_mask, query_mask, valid)
        self.sum_mass += sum_mass.to(self.sum_mass.device)
        self.count += count.to(self.count.device)

    def compute(self) -> Tensor:
        """Return the (L, H) float64 scores; NaN for heads with no counted query."""
        return self.sum_mass / self.count


class CollisionScore(RelationScore):
    """The relation score of contact: mass each head puts on a query's collision partners.

    One instance per variant: pass the neighbour mask (``score``), the contact set
    (``strict``) or the contact set with impact queries (``impact``) to :meth:`update`.

    Example::

        metric = CollisionScore(num_layers=2, num_heads=8)
        for batch in probe_batches:
            _, attention = model(batch["features"], return_attention=True)
            metric.update(attention, neighbour_mask(batch["positions"], batch["radii"]))
        scores = metric.compute()  # (2, 8)

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    """


class BandCollisionScore(Metric):
    """Collision score per band of query height, per [layer, head].

    The queries are split into ``num_bands`` equal bands of the height of their centre over
    ``[0, box_height]`` (band 0 at the floor); each band's score is the score over its queries
    (:func:`~lit_emergence.functional.band_collision_score`). Holds the (L, H, K) float64
    sums of partner mass and query counts, reduced by ``"sum"`` across processes, so it is
    exact under DDP; the count-weighted mean of the band scores is the
    :class:`CollisionScore` of the same updates.

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        box_height: Height of the box (floor at ``y = 0``), > 0.
        num_bands: Number of bands K, >= 1.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: For bad head counts, a non-positive ``box_height`` or ``num_bands``.

    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sum_mass: Tensor
    count: Tensor

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        box_height: float,
        num_bands: int = 4,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        check_heads(num_layers, num_heads, name)
        if not box_height > 0:
            raise ValueError(f"{name}: box_height={box_height} must be > 0")
        if not isinstance(num_bands, int) or num_bands < 1:
            raise ValueError(f"{name}: num_bands={num_bands!r} must be a positive integer")
        self.num_layers, self.num_heads = num_layers, num_heads
        self.box_height, self.num_bands = float(box_height), num_bands
        zeros = torch.zeros(num_layers, num_heads, num_bands, dtype=torch.float64)
        self.add_state("sum_mass", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(
        self,
        attention: Tensor,
        pair_mask: Tensor,
        positions: Tensor,
        query_mask: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> None:
        """Add one batch.

        Args:
            attention: (B, L, H, N, N) attention patterns.
            pair_mask: (B, N, N) bool partners of each query.
            positions: (B, N, 2) particle centres (the heights of the queries).
            query_mask: Optional (B, N) bool restricting the queries.
            valid: Optional (B, N) bool, True for real particles.

        """
        check_attention_heads(attention, self.num_layers, self.num_heads, type(self).__name__)
        bands = height_bands(positions, self.box_height, self.num_bands)
        sum_mass, count = grouped_collision_score_statistics(
            attention, pair_mask, bands, self.num_bands, query_mask, valid
        )
        self.sum_mass += sum_mass.to(self.sum_mass.device)
        self.count += count.to(self.count.device)

    def compute(self) -> Tensor:
        """Return the (L, H, K) float64 band scores; NaN for a band with no counted query."""
        return self.sum_mass / self.count
