r"""A canonical gauge: one representative of every head's gauge orbit, for comparisons.

Within the orbit of a head, the bias-augmented QK form ``M_QK = [W_Q; b_Q] [W_K; b_K]^T``
((D+1, D+1), rank <= Dh) and ``M_OV = [W_V; b_V] W_O`` ((D+1, D)) are fixed. With their SVDs
``M = U S V^T`` (top Dh triplets) the canonical head is the *balanced* factorisation

    [W_Q; b_Q]' = U S^{1/2},   [W_K; b_K]' = V S^{1/2},
    [W_V; b_V]' = U S^{1/2},   W_O' = S^{1/2} V^T      (with the OV circuit's own U, S, V),

which reproduces ``M`` exactly, so the model computes the same function (the gauge-invariant
bias terms are kept with the weights). Singular vector pairs are signed so that the entry of
``U``'s column with the largest magnitude is positive; with distinct singular values the
canonical weights are then unique: two gauge-equivalent heads land on the same weights (up to
round-off), whatever their starting gauge. Head order is left as it is (use
:mod:`lit_emergence.gauge.matching` to align heads).

Balanced factors are also the smallest in the orbit: ``|L A|^2 + |R A^{-T}|^2 >= 2 |L R^T|_*``
with equality exactly at the balanced gauge, so weight decay pulls every head towards it.
:func:`gauge_imbalance` measures how far a head is from it (1 = balanced); it is the one
gauge-*dependent* diagnostic this package reports.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lit_emergence.gauge.heads import HeadWeights, attention_modules, read_heads
from lit_emergence.gauge.lowrank import factored_svd

__all__ = ["balanced_factors", "canonical_gauge", "canonical_heads", "gauge_imbalance"]


def balanced_factors(left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """Balanced, sign-fixed factors of ``left @ right^T``: ``(U S^1/2, V S^1/2)``.

    Args:
        left: (..., m, r).
        right: (..., n, r).

    Returns:
        ``(left', right')`` of the same shapes with ``left' @ right'^T == left @ right^T``
        and ``left'^T left' == right'^T right' == diag(S)``.

    """
    u, singular, v = factored_svd(left, right)
    # Sign convention: the largest-magnitude entry of each column of U is positive.
    pivot = u.abs().argmax(dim=-2, keepdim=True)
    sign = torch.where(torch.gather(u, -2, pivot) < 0, -1.0, 1.0).to(u.dtype)
    root = singular.sqrt().unsqueeze(-2)
    return u * sign * root, v * sign * root


def canonical_heads(heads: HeadWeights) -> HeadWeights:
    """The canonical gauge of one block's heads (see the module docstring)."""
    query, key = balanced_factors(heads.augmented_query(), heads.augmented_key())
    value, output = balanced_factors(heads.augmented_value(), heads.output.transpose(1, 2))
    return HeadWeights(
        query=query[:, :-1],
        query_bias=query[:, -1],
        key=key[:, :-1],
        key_bias=key[:, -1],
        value=value[:, :-1],
        value_bias=value[:, -1],
        output=output.transpose(1, 2),
    )


def canonical_gauge(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Bring every head of ``model`` into the canonical (balanced SVD) gauge.

    Layers with rotary embeddings keep their QK maps (only the gauge maps that commute with
    the rotations keep the function, and the balanced SVD factors are not among them); their
    OV maps are balanced.

    Args:
        model: Any model whose attention layers :func:`lit_emergence.heads.attention_layers`
            recognises.
        inplace: Overwrite ``model``'s weights instead of returning a deep copy.

    Returns:
        The model in the canonical gauge; same function (float64 arithmetic, cast back).

    Raises:
        ValueError: For grouped-query layers (heads share keys and values).

    """
    layers = attention_modules(model)
    grouped = [layer.label for layer in layers if layer.grouped]
    if grouped:
        raise ValueError(
            f"{grouped[0]} shares keys and values between heads (grouped-query attention): "
            "there is no per-head canonical gauge; compare such models by head_invariants"
        )
    target = model if inplace else copy.deepcopy(model)
    for layer in attention_modules(target):
        heads = layer.read_heads()
        balanced = canonical_heads(heads)
        if layer.rotary is not None:  # only rotations' commutant keeps RoPE: leave QK alone
            for name in ("query", "query_bias", "key", "key_bias"):
                setattr(balanced, name, getattr(heads, name))
        layer.write_heads(balanced)
    return target


def gauge_imbalance(model: nn.Module) -> tuple[Tensor, Tensor]:
    """How far each head is from the balanced gauge: ``(|L|^2 + |R|^2) / (2 |L R^T|_*)``.

    ``L, R`` are the bias-augmented factors of the QK form (``[W_Q; b_Q]``, ``[W_K; b_K]``) and
    of the OV circuit (``[W_V; b_V]``, ``W_O^T``). The ratio is at least 1, and 1 exactly in
    the canonical gauge; it is gauge-dependent by design.

    Args:
        model: As in :func:`canonical_gauge`.

    Returns:
        ``(qk, ov)``, each (L, H) float64 on CPU.

    """
    qk, ov = [], []
    with torch.no_grad():
        for attn in attention_modules(model):
            heads = read_heads(attn)
            pairs = (
                (heads.augmented_query(), heads.augmented_key(), qk),
                (heads.augmented_value(), heads.output.transpose(1, 2), ov),
            )
            for left, right, out in pairs:
                _, singular, _ = factored_svd(left, right)
                squared = left.square().sum(dim=(-2, -1)) + right.square().sum(dim=(-2, -1))
                out.append(squared / (2.0 * singular.sum(dim=-1)))
    return torch.stack(qk).cpu(), torch.stack(ov).cpu()
