"""Relation scores: each head's share of attention on a relation between tokens.

A *relation* is a (B, N, N) bool mask, ``relation[b, i, j]`` True when key ``j`` stands in the
relation to query ``i`` in sample ``b``. The relation score of head (l, h) is the mean, over
the queries that have at least one related key, of the attention mass the query puts on its
related keys. The collision-detection score is the relation score of contact (``pair_mask``
of :func:`~lit_emergence.functional.collision.collision_score`); the masks here are other
common relations:

- :func:`previous_token_mask`: ``j = i - offset`` (the previous-token head of language models);
- :func:`within_radius_mask`: keys within a distance ``r`` of the query (any dimension, 1-D
  token positions included);
- :func:`same_group_mask`: keys with the query's label (same object, same sentence, ...).

A relation never includes the diagonal (a token is not related to itself) or padding.

Shapes: B samples, L layers, H heads per layer, N tokens per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_emergence.functional._pairs import check_mask, valid_pairs
from lit_emergence.functional.collision import collision_score
from lit_emergence.functional.geometry import pairwise_distances

__all__ = ["previous_token_mask", "relation_score", "same_group_mask", "within_radius_mask"]


def relation_score(
    attention: Tensor,
    relation: Tensor,
    query_mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Share of each head's attention on a relation, averaged over the related queries.

    The score of head (l, h) is ``mean_i sum_j attention[b, l, h, i, j] relation[b, i, j]``
    over the queries ``(b, i)`` with at least one related key (and ``query_mask``, if given).
    It is the collision score with ``pair_mask = relation``
    (:func:`~lit_emergence.functional.collision.collision_score`).

    Args:
        attention: (B, L, H, N, N) attention patterns.
        relation: (B, N, N) bool, True where key ``j`` is related to query ``i``.
        query_mask: Optional (B, N) bool restricting the queries.
        valid: Optional (B, N) bool, True for real tokens.

    Returns:
        (L, H) float64 scores in ``[0, 1]`` for rows that sum to 1; NaN when no query has a
        related key.

    """
    return collision_score(attention, relation, query_mask, valid)


def previous_token_mask(
    batch: int, num_tokens: int, offset: int = 1, device: torch.device | str | None = None
) -> Tensor:
    """The previous-token relation: key ``j`` is related to query ``i`` when ``j = i - offset``.

    Args:
        batch: Number of samples B.
        num_tokens: Tokens per sample N.
        offset: How far back the related key is, >= 1 (2: the token before the previous one).
        device: Device of the mask.

    Returns:
        (B, N, N) bool; the first ``offset`` queries have no related key.

    Raises:
        ValueError: For a non-positive ``offset`` or negative sizes.

    """
    if not isinstance(offset, int) or offset < 1:
        raise ValueError(f"previous_token_mask: offset={offset!r} must be an integer >= 1")
    if batch < 0 or num_tokens < 0:
        raise ValueError(f"previous_token_mask: sizes must be >= 0, got {(batch, num_tokens)}")
    mask = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)
    return mask.tril(-offset).triu(-offset).expand(batch, num_tokens, num_tokens)


def within_radius_mask(positions: Tensor, radius: float, valid: Tensor | None = None) -> Tensor:
    """Keys within distance ``radius`` of the query: ``d_ij <= radius``, ``j != i``.

    Args:
        positions: (B, N) 1-D positions (e.g. token index) or (B, N, D) points.
        radius: Largest distance of a related key, > 0, in the units of ``positions``.
        valid: Optional (B, N) bool, True for real tokens.

    Returns:
        (B, N, N) bool, symmetric, diagonal and padding False.

    Raises:
        ValueError: For a non-positive or non-finite ``radius`` or bad shapes.

    """
    if not (isinstance(radius, int | float) and 0 < radius < float("inf")):
        raise ValueError(f"within_radius_mask: radius={radius!r} must be a finite number > 0")
    distances = pairwise_distances(positions, valid)  # padding at +inf: never within
    B, N = distances.shape[:2]
    return (distances <= radius) & valid_pairs(valid, B, N, distances.device)


def same_group_mask(groups: Tensor, valid: Tensor | None = None) -> Tensor:
    """Keys that share the query's label: ``groups[b, j] == groups[b, i]``, ``j != i``.

    Args:
        groups: (B, N) integer labels (object id, sentence id, ...).
        valid: Optional (B, N) bool, True for real tokens.

    Returns:
        (B, N, N) bool, symmetric, diagonal and padding False.

    Raises:
        ValueError: For a floating or wrongly shaped ``groups``.

    """
    if groups.ndim != 2 or groups.is_floating_point() or groups.is_complex():
        raise ValueError(
            "same_group_mask: groups must be an integer or bool tensor of shape (B, N), got "
            f"{groups.dtype} {tuple(groups.shape)}"
        )
    B, N = groups.shape
    check_mask(valid, (B, N), "valid", "same_group_mask")
    same = groups[:, :, None] == groups[:, None, :]
    return same & valid_pairs(valid, B, N, groups.device)
