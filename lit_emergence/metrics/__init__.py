"""torchmetrics classes over :mod:`lit_emergence.functional`, exact under DDP.

Each metric holds float64 sufficient statistics reduced by ``"sum"`` across processes, so a
probe set split over batches or ranks gives the single-process answer.
"""

from lit_emergence.metrics.attention_distance import (
    AttentionDistanceCorrelation,
    ConnectedCorrelation,
)
from lit_emergence.metrics.collision_score import (
    BandCollisionScore,
    CollisionScore,
    RelationScore,
)
from lit_emergence.metrics.query_distance import QueryDistance

__all__ = [
    "AttentionDistanceCorrelation",
    "BandCollisionScore",
    "CollisionScore",
    "ConnectedCorrelation",
    "QueryDistance",
    "RelationScore",
]
