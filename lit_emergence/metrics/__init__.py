"""torchmetrics classes over :mod:`lit_emergence.functional`, exact under DDP.

Each metric holds float64 sufficient statistics reduced by ``"sum"`` across processes, so a
probe set split over batches or ranks gives the single-process answer.
"""

from lit_emergence.metrics.attention_distance import (
    AttentionDistanceCorrelation,
    ConnectedCorrelation,
)
from lit_emergence.metrics.collision_score import CollisionScore

__all__ = ["AttentionDistanceCorrelation", "CollisionScore", "ConnectedCorrelation"]
