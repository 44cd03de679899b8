"""Per-query attention-distance observables of every head, accumulated over batches and ranks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_emergence.functional.query_distance import (
    QUERY_OBSERVABLES,
    check_observables,
    query_distance_from_statistics,
    query_distance_statistics,
)
from lit_emergence.metrics._shape import check_attention_heads, check_heads

__all__ = ["QueryDistance"]


class QueryDistance(Metric):
    """Mean attention distance and per-query attention-distance correlations, per [layer, head].

    Holds, for each chosen observable of :mod:`lit_emergence.functional.query_distance`
    (``mean_distance``, ``pearson``, ``spearman``), the float64 sum of its per-query values and
    the number of queries where it is defined, reduced by ``"sum"`` across processes: the
    average over queries of a probe set split over batches or ranks is the single-call answer.
    One instance computes several observables from one pass over the attention.

    Example::

        metric = QueryDistance(num_layers=2, num_heads=8)
        for batch in probe_batches:
            _, attention = model(batch["features"], return_attention=True)
            metric.update(attention, batch["positions"])
        metric.compute()["spearman"]  # (2, 8)

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        observables: Which of ``("mean_distance", "pearson", "spearman")`` to compute.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: For bad head counts or unknown observables.

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        observables: Sequence[str] = QUERY_OBSERVABLES,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        check_heads(num_layers, num_heads, name)
        observables = check_observables(observables, name)
        self.num_layers, self.num_heads = num_layers, num_heads
        self.observables = observables
        for observable in observables:
            for kind in ("sum", "count"):
                default = torch.zeros(num_layers, num_heads, dtype=torch.float64)
                self.add_state(f"{kind}_{observable}", default=default, dist_reduce_fx="sum")

    def update(self, attention: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        """Add the queries of one batch.

        Args:
            attention: (B, L, H, N, N) attention patterns.
            positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
            valid: Optional (B, N) bool, True for real particles.

        """
        check_attention_heads(attention, self.num_layers, self.num_heads, type(self).__name__)
        stats = query_distance_statistics(attention, positions, valid, self.observables)
        for key, value in stats.items():
            state = getattr(self, key)
            setattr(self, key, state + value.to(state.device))

    def compute(self) -> dict[str, Tensor]:
        """Return observable name -> (L, H) float64 average over queries (NaN: none defined)."""
        return query_distance_from_statistics(dict(self.metric_state))
