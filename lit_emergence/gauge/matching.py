"""Match the heads of two models (two seeds, or two checkpoints of one run), block by block.

Head ``h`` of one run has no reason to be head ``h`` of another: heads are interchangeable
(the permutation symmetry) and their weights are defined only up to GL(Dh) (the continuous
gauge). So heads are compared through gauge-invariant features — by default the log singular
values of ``W_QK`` and ``W_OV`` (:func:`head_features`), which are also unchanged by a rotation
of the residual stream, so they stay comparable between runs whose residual bases differ — and
paired by a minimum-cost assignment (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``) within each block, with the Euclidean distance
between feature vectors as the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from lit_emergence.gauge.invariants import HeadInvariants, head_invariants

__all__ = ["HeadMatching", "head_features", "match_checkpoints", "match_heads", "match_models"]


@dataclass
class HeadMatching:
    """The result of :func:`match_heads`.

    Attributes:
        permutation: (L, H) long; head ``h`` of block ``l`` of model B is matched to head
            ``permutation[l, h]`` of model A. It is the ``permutation`` of the
            :class:`~lit_emergence.gauge.GaugeTransform` that turns A into B when one does.
        pair_cost: (L, H) float64, the cost (feature distance) of each matched pair, indexed
            by B's head.
        cost: (L,) float64, total cost of each block's assignment.

    """

    permutation: Tensor
    pair_cost: Tensor
    cost: Tensor


def head_features(source: nn.Module | HeadInvariants) -> Tensor:
    """Default matching features: ``log`` singular values of ``W_QK`` and ``W_OV`` per head.

    Args:
        source: A model (its invariants are computed) or its :class:`HeadInvariants`.

    Returns:
        (L, H, 2 * Dh) float64; singular values below the smallest normal float are clamped
        before the logarithm.

    """
    invariants = source if isinstance(source, HeadInvariants) else head_invariants(source)
    spectra = torch.cat([invariants.qk_singular_values, invariants.ov_singular_values], dim=-1)
    return spectra.clamp_min(torch.finfo(spectra.dtype).tiny).log()


def match_heads(features_a: Tensor, features_b: Tensor) -> HeadMatching:
    """Pair the heads of B with those of A, within each block, at minimum total distance.

    Args:
        features_a: (L, H, K) gauge-invariant features of model A's heads.
        features_b: (L, H, K) the same features of model B's heads.

    Returns:
        The :class:`HeadMatching` (B's head ``h`` <-> A's head ``permutation[l, h]``).

    Raises:
        ValueError: If the feature tensors are not (L, H, K) of equal shape.

    """
    if features_a.dim() != 3 or features_a.shape != features_b.shape:
        raise ValueError(
            f"features must both be (L, H, K) of equal shape, got {tuple(features_a.shape)} "
            f"and {tuple(features_b.shape)}; compare models with the same layers and heads"
        )
    a = features_a.detach().to(torch.float64).cpu()
    b = features_b.detach().to(torch.float64).cpu()
    permutations, pair_costs = [], []
    for layer in range(a.shape[0]):
        distance = torch.cdist(b[layer], a[layer])  # (H_b, H_a)
        rows, columns = linear_sum_assignment(distance.numpy())
        order = torch.as_tensor(columns[rows.argsort()], dtype=torch.long)
        permutations.append(order)
        pair_costs.append(distance[torch.arange(len(order)), order])
    pair_cost = torch.stack(pair_costs)
    return HeadMatching(torch.stack(permutations), pair_cost, pair_cost.sum(dim=-1))


FeatureFn = Callable[[nn.Module], Tensor]


def match_models(
    model_a: nn.Module, model_b: nn.Module, features_fn: FeatureFn = head_features
) -> HeadMatching:
    """Match the heads of two models (see :func:`match_heads`).

    Args:
        model_a: Any model whose attention layers
            :func:`lit_emergence.heads.attention_layers` recognises.
        model_b: Another one with the same number of blocks, heads and head width.
        features_fn: ``model -> (L, H, K)`` gauge-invariant head features.

    Returns:
        The :class:`HeadMatching`.

    Raises:
        ValueError: If the models' head layouts differ.

    """
    features_a, features_b = features_fn(model_a), features_fn(model_b)
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"cannot match heads of models with different shapes: features "
            f"{tuple(features_a.shape)} vs {tuple(features_b.shape)} (L, H, K)"
        )
    return match_heads(features_a, features_b)


def match_checkpoints(
    path_a: str | Path, path_b: str | Path, features_fn: FeatureFn = head_features
) -> HeadMatching:
    """Match the heads of two :class:`~lit_emergence.module.LearnedSimulator` checkpoints.

    Args:
        path_a: Checkpoint of model A (e.g. ``runs/<run>/checkpoints/last.ckpt``).
        path_b: Checkpoint of model B.
        features_fn: ``model -> (L, H, K)`` gauge-invariant head features.

    Returns:
        The :class:`HeadMatching`.

    """
    from lit_emergence.module import LearnedSimulator  # Lightning only when needed

    models = [
        LearnedSimulator.load_from_checkpoint(p, map_location="cpu") for p in (path_a, path_b)
    ]
    return match_models(*models, features_fn=features_fn)
