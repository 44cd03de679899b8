"""Pure tensor functions that measure the structure of attention heads.

Every function is batched (no Python loop over layers or heads), accepts a ``valid`` (B, N)
padding mask, accumulates in float64 and runs on CPU or CUDA. The ``*_statistics`` functions
return sums that add up over batches and ranks; :mod:`lit_emergence.metrics` wraps them in
torchmetrics classes.
"""

from lit_emergence.functional.attention_distance import (
    attention_distance_correlation,
    attention_distance_statistics,
    connected_correlation,
    connected_correlation_from_statistics,
    correlation_from_statistics,
    default_r_grid,
)
from lit_emergence.functional.collision import (
    HEAD_CLASSES,
    CollisionStatistics,
    classify_heads,
    collision_score,
    collision_score_statistics,
    head_class_names,
    impact_queries,
)
from lit_emergence.functional.geometry import neighbour_mask, pairwise_distances

__all__ = [
    "HEAD_CLASSES",
    "CollisionStatistics",
    "attention_distance_correlation",
    "attention_distance_statistics",
    "classify_heads",
    "collision_score",
    "collision_score_statistics",
    "connected_correlation",
    "connected_correlation_from_statistics",
    "correlation_from_statistics",
    "default_r_grid",
    "head_class_names",
    "impact_queries",
    "neighbour_mask",
    "pairwise_distances",
]
