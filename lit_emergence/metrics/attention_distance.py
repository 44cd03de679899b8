"""Attention-distance correlation (Pearson r), connected correlation G(r) and its length.

Both metrics hold the float64 sums of
:func:`~lit_emergence.functional.attention_distance.attention_distance_statistics` (reduced by
``"sum"`` across processes) and turn them into results with the same ``*_from_statistics``
functions as the functional API, so there is one implementation of the maths. They are two
classes because they have different states (G(r) needs a grid); a
:class:`ConnectedCorrelation` also carries the Pearson sums, and
:meth:`ConnectedCorrelation.compute_pearson` returns r from them, so one instance serves both
when the grid is wanted anyway; :meth:`ConnectedCorrelation.compute_length` returns the
correlation length of G(r) from the same sums.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_emergence.functional.attention_distance import (
    PEARSON_KEYS,
    attention_distance_statistics,
    connected_correlation_from_statistics,
    correlation_from_statistics,
    correlation_length,
)
from lit_emergence.metrics._shape import check_attention_heads, check_heads

__all__ = ["AttentionDistanceCorrelation", "ConnectedCorrelation"]


class AttentionDistanceCorrelation(Metric):
    """Pearson correlation between ``A_ij`` and ``d_ij`` per [layer, head], over all pairs seen.

    The off-diagonal pairs of real particles of every scene passed to :meth:`update` are pooled,
    as in :func:`~lit_emergence.functional.attention_distance_correlation`.

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: If ``num_layers`` or ``num_heads`` is not a positive integer.

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_layers: int, num_heads: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        check_heads(num_layers, num_heads, type(self).__name__)
        self.num_layers, self.num_heads = num_layers, num_heads
        for key in PEARSON_KEYS:
            default = torch.zeros(num_layers, num_heads, dtype=torch.float64)
            self.add_state(key, default=default, dist_reduce_fx="sum")

    def _r_grid(self) -> Tensor | None:
        return None

    def update(self, attention: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        """Add the pairs of one batch.

        Args:
            attention: (B, L, H, N, N) attention patterns.
            positions: (B, N, 2) particle centres, (B, N, D) points or (B, N) 1-D positions.
            valid: Optional (B, N) bool, True for real particles.

        """
        check_attention_heads(attention, self.num_layers, self.num_heads, type(self).__name__)
        stats = attention_distance_statistics(attention, positions, valid, self._r_grid())
        for key, value in stats.items():
            state = getattr(self, key)
            setattr(self, key, state + value.to(state.device))

    def _statistics(self) -> dict[str, Tensor]:
        return dict(self.metric_state)

    def compute(self) -> Tensor:
        """Return the (L, H) float64 Pearson correlations (NaN without pairs or variance)."""
        return correlation_from_statistics(self._statistics())


class ConnectedCorrelation(AttentionDistanceCorrelation):
    """Connected correlation ``G(r) = E[A 1{d <= r}] - E[A] E[1{d <= r}]`` per [layer, head].

    Pools the pairs of every update, as in
    :func:`~lit_emergence.functional.connected_correlation`.

    Args:
        num_layers: Number of layers L of the attention.
        num_heads: Heads per layer H.
        r_grid: (R,) ascending radii in the units of the positions (see
            :func:`~lit_emergence.functional.default_r_grid`); kept as a non-persistent buffer
            that follows the metric's device.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: For bad head counts or an ``r_grid`` that is not a sorted 1-D tensor.

    """

    def __init__(self, num_layers: int, num_heads: int, r_grid: Tensor, **kwargs: object) -> None:
        super().__init__(num_layers, num_heads, **kwargs)
        r_grid = torch.as_tensor(r_grid, dtype=torch.float64)
        if r_grid.ndim != 1 or r_grid.numel() < 1 or bool((r_grid[1:] < r_grid[:-1]).any()):
            raise ValueError(
                f"ConnectedCorrelation: r_grid must be a sorted non-empty 1-D tensor, got "
                f"shape {tuple(r_grid.shape)}; see lit_emergence.functional.default_r_grid"
            )
        self.register_buffer("r_grid", r_grid, persistent=False)
        R = r_grid.numel()
        self.add_state("sum_ind", default=torch.zeros(R, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "sum_a_ind",
            default=torch.zeros(num_layers, num_heads, R, dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def _r_grid(self) -> Tensor | None:
        return self.r_grid

    def compute(self) -> Tensor:
        """Return ``G(r)`` as an (L, H, R) float64 tensor (NaN without pairs)."""
        return connected_correlation_from_statistics(self._statistics())

    def compute_pearson(self) -> Tensor:
        """Return the (L, H) Pearson correlations from the same sums, synchronised like compute.

        A :class:`ConnectedCorrelation` holds the Pearson sums too, so one instance serves both.
        Under DDP every rank must call this (it gathers the states, as :meth:`compute` does).
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return correlation_from_statistics(self._statistics())

    def compute_length(self, contact_index: int, fraction: float = 0.5) -> Tensor:
        """Return the (L, H) correlation length of G(r), synchronised like compute.

        See :func:`~lit_emergence.functional.correlation_length`: the radius beyond
        ``r_grid[contact_index]`` at which G first falls to ``fraction`` of its value there
        (NaN where G at contact is not positive or never falls that far on the grid). Under
        DDP every rank must call this.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            connected = connected_correlation_from_statistics(self._statistics())
            return correlation_length(connected, self.r_grid, contact_index, fraction)
