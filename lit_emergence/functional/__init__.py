"""Pure tensor functions that measure the structure of attention heads.

Every function is batched (no Python loop over layers or heads), accepts a ``valid`` (B, N)
padding mask, accumulates in float64 and runs on CPU or CUDA. The ``*_statistics`` functions
return sums that add up over batches and ranks; :mod:`lit_emergence.metrics` wraps them in
torchmetrics classes. The package exports the measurements; the sufficient statistics behind
them (``attention_distance.attention_distance_statistics``,
``collision.collision_score_statistics``, ...) stay importable from their modules.
"""

from lit_emergence.functional.attention_distance import (
    attention_distance_correlation,
    connected_correlation,
    correlation_length,
    default_r_grid,
)
from lit_emergence.functional.collision import (
    HEAD_CLASSES,
    band_collision_score,
    classify_heads,
    collision_score,
    head_class_names,
    height_bands,
    impact_queries,
)
from lit_emergence.functional.geometry import neighbour_mask, pairwise_distances
from lit_emergence.functional.query_distance import mean_attention_distance, query_correlation
from lit_emergence.functional.relations import (
    previous_token_mask,
    relation_score,
    same_group_mask,
    within_radius_mask,
)

__all__ = [
    "HEAD_CLASSES",
    "attention_distance_correlation",
    "band_collision_score",
    "classify_heads",
    "collision_score",
    "connected_correlation",
    "correlation_length",
    "default_r_grid",
    "head_class_names",
    "height_bands",
    "impact_queries",
    "mean_attention_distance",
    "neighbour_mask",
    "pairwise_distances",
    "previous_token_mask",
    "query_correlation",
    "relation_score",
    "same_group_mask",
    "within_radius_mask",
]
