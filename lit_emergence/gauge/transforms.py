r"""Gauge transformations of attention heads: maps of the weights that leave the function unchanged.

For head ``h`` of block ``l`` (maths convention of :mod:`lit_emergence.gauge.heads`) and any
invertible ``A, B`` in GL(Dh) (Hashimoto, Hirono and Sannai, arXiv:2402.02362):

    W_Q -> W_Q A,   b_Q -> b_Q A,       W_K -> W_K A^{-T},  b_K -> b_K A^{-T}
    W_V -> W_V B,   b_V -> b_V B,       W_O -> B^{-1} W_O

Scores ``q_i k_j^T = (x_i W_Q + b_Q) A A^{-1} (x_j W_K + b_K)^T`` are unchanged, hence the
attention pattern; the values change by ``B`` on the right and ``W_O`` undoes it (attention rows
are convex combinations, so the bias passes through). Heads of a block can also be permuted:
``permutation[l, h] = p`` puts old head ``p`` in slot ``h`` (its q/k/v rows and ``out_proj``
columns move together), which permutes the head axis of the attention (B, L, H, N, N) and leaves
the output unchanged.

A :class:`GaugeTransform` holds ``A`` and ``B`` for every head and a permutation per block;
:func:`apply_gauge` applies it (in float64, cast back to the model's dtype) and
:func:`random_gauge` draws one with a chosen condition number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_emergence.gauge.heads import HeadWeights, attention_modules
from lit_emergence.gauge.rotary import commutes_with_rotary, random_rotary_commuting
from lit_emergence.heads import AttentionLayer

__all__ = [
    "GaugeTransform",
    "apply_gauge",
    "identity_gauge",
    "random_gauge",
    "random_invertible",
    "random_orthogonal",
    "transform_heads",
]


@dataclass
class GaugeTransform:
    """A gauge transformation of every head of a model.

    Attributes:
        qk: ``A`` per head, (L, H, Dh, Dh): ``W_Q -> W_Q A``, ``W_K -> W_K A^{-T}``.
        ov: ``B`` per head, (L, H, Dh, Dh): ``W_V -> W_V B``, ``W_O -> B^{-1} W_O``.
        permutation: (L, H) long; after ``A`` and ``B`` act on each head, slot ``h`` of block
            ``l`` receives old head ``permutation[l, h]``.

    """

    qk: Tensor
    ov: Tensor
    permutation: Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(L, H, Dh)``."""
        L, H, Dh, _ = self.qk.shape
        return L, H, Dh

    def condition_numbers(self) -> tuple[Tensor, Tensor]:
        """Condition numbers (2-norm) of ``A`` and ``B`` per head, each (L, H)."""
        return torch.linalg.cond(self.qk), torch.linalg.cond(self.ov)


def _generator(seed: torch.Generator | int | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def random_orthogonal(
    dim: int, generator: torch.Generator | int | None = None, batch: tuple[int, ...] = ()
) -> Tensor:
    """Haar-random orthogonal matrices (float64).

    Args:
        dim: Matrix size.
        generator: Generator or seed (None: fresh entropy); the global RNG is never used.
        batch: Leading batch shape.

    Returns:
        (*batch, dim, dim) orthogonal matrices, reflections included.

    """
    gaussian = torch.randn(*batch, dim, dim, generator=_generator(generator), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # Fixing the signs of R's diagonal makes the distribution exactly Haar (Mezzadri 2007).
    return q * torch.sgn(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def random_invertible(
    dim: int,
    condition_number: float,
    generator: torch.Generator | int | None = None,
    batch: tuple[int, ...] = (),
) -> Tensor:
    """Random invertible matrices ``U diag(s) V^T`` with a given condition number (float64).

    ``U`` and ``V`` are Haar-random orthogonal; the singular values ``s`` are log-spaced from
    ``condition_number ** -0.5`` to ``condition_number ** 0.5``, so ``|det| = 1``: the map keeps
    volumes and only its anisotropy (the condition number) differs from a rotation.

    Args:
        dim: Matrix size (Dh).
        condition_number: Ratio of the largest to the smallest singular value, at least 1
            (1 gives an orthogonal matrix).
        generator: Generator or seed (None: fresh entropy); the global RNG is never used.
        batch: Leading batch shape.

    Returns:
        (*batch, dim, dim) float64 matrices.

    Raises:
        ValueError: If ``condition_number < 1`` or ``dim < 1``.

    """
    if not condition_number >= 1.0:
        raise ValueError(f"condition_number={condition_number} must be >= 1 (1 = orthogonal)")
    if dim < 1:
        raise ValueError(f"dim={dim} must be >= 1")
    generator = _generator(generator)
    left = random_orthogonal(dim, generator, batch)
    right = random_orthogonal(dim, generator, batch)
    half_log = 0.5 * torch.log(torch.tensor(float(condition_number), dtype=torch.float64))
    singular = torch.exp(torch.linspace(-1.0, 1.0, dim, dtype=torch.float64) * half_log)
    return (left * singular) @ right.transpose(-2, -1)


def _model_shape(model: nn.Module) -> tuple[int, int, int]:
    layers = attention_modules(model)
    shapes = {(layer.num_heads, layer.head_dim) for layer in layers}
    if len(shapes) != 1:
        raise ValueError(
            f"the attention layers of {type(model).__name__} differ in (heads, head width) "
            f"{sorted(shapes)}; a GaugeTransform needs one (L, H, Dh) shape"
        )
    ((heads, head_dim),) = shapes
    return len(layers), heads, head_dim


def _grouped(transform: Tensor, layer: AttentionLayer) -> Tensor:
    """One layer's (H, Dh, Dh) matrices with every K/V group using its first head's matrix."""
    if not layer.grouped:
        return transform
    first = torch.tensor(
        [layer.kv_head(h) * (layer.num_heads // layer.kv_heads) for h in range(layer.num_heads)]
    )
    return transform[first]


def identity_gauge(model: nn.Module) -> GaugeTransform:
    """The transformation that changes nothing, shaped for ``model``."""
    L, H, Dh = _model_shape(model)
    eye = torch.eye(Dh, dtype=torch.float64).expand(L, H, Dh, Dh).clone()
    return GaugeTransform(eye, eye.clone(), torch.arange(H).expand(L, H).clone())


def random_gauge(
    model: nn.Module,
    condition_number: float = 10.0,
    permute_heads: bool = False,
    generator: torch.Generator | int | None = None,
) -> GaugeTransform:
    """Draw a random gauge transformation for ``model``.

    Args:
        model: The model it is for (sets L, H and Dh).
        condition_number: Condition number of every ``A`` and ``B`` (at least 1; see
            :func:`random_invertible`).
        permute_heads: Also draw a uniformly random head permutation per block.
        generator: Generator or seed (None: fresh entropy); the global RNG is never used.

    Returns:
        The :class:`GaugeTransform`.

    Raises:
        ValueError: If ``condition_number < 1``.

    """
    L, H, Dh = _model_shape(model)
    generator = _generator(generator)
    qk = random_invertible(Dh, condition_number, generator, (L, H))
    ov = random_invertible(Dh, condition_number, generator, (L, H))
    for index, layer in enumerate(attention_modules(model)):
        if layer.rotary is not None:
            qk[index] = random_rotary_commuting(Dh, layer.rotary, condition_number, generator, (H,))
        qk[index], ov[index] = _grouped(qk[index], layer), _grouped(ov[index], layer)
        if permute_heads and layer.grouped:
            raise ValueError(
                f"{layer.label} groups its heads' keys and values (grouped-query attention): "
                "heads cannot be permuted one by one; use permute_heads=False"
            )
    if permute_heads:
        permutation = torch.stack([torch.randperm(H, generator=generator) for _ in range(L)])
    else:
        permutation = torch.arange(H).expand(L, H).clone()
    return GaugeTransform(qk, ov, permutation)


def _check_transform(transform: GaugeTransform, shape: tuple[int, int, int]) -> None:
    L, H, Dh = shape
    if tuple(transform.qk.shape) != (L, H, Dh, Dh) or tuple(transform.ov.shape) != (L, H, Dh, Dh):
        raise ValueError(
            f"gauge matrices have shapes {tuple(transform.qk.shape)} and "
            f"{tuple(transform.ov.shape)}; the model needs (L, H, Dh, Dh) = {(L, H, Dh, Dh)}"
        )
    expected = torch.arange(H).expand(L, H)
    if tuple(transform.permutation.shape) != (L, H) or not torch.equal(
        transform.permutation.sort(dim=-1).values.cpu(), expected
    ):
        raise ValueError(
            f"permutation must be (L, H) = {(L, H)} with a permutation of 0..H-1 per row"
        )


def transform_heads(heads: HeadWeights, qk: Tensor, ov: Tensor, permutation: Tensor) -> HeadWeights:
    """Apply ``A = qk``, ``B = ov`` (each (H, Dh, Dh)) and a permutation to one block's heads."""
    qk, ov = qk.to(torch.float64), ov.to(torch.float64)
    # W_K A^{-T} = (A^{-1} W_K^T)^T and W_O -> B^{-1} W_O: solves, not explicit inverses.
    key = torch.linalg.solve(qk, heads.key.transpose(1, 2)).transpose(1, 2)
    key_bias = torch.linalg.solve(qk, heads.key_bias.unsqueeze(-1)).squeeze(-1)
    moved = HeadWeights(
        query=heads.query @ qk,
        query_bias=(heads.query_bias.unsqueeze(1) @ qk).squeeze(1),
        key=key,
        key_bias=key_bias,
        value=heads.value @ ov,
        value_bias=(heads.value_bias.unsqueeze(1) @ ov).squeeze(1),
        output=torch.linalg.solve(ov, heads.output),
    )
    order = permutation.long()
    return HeadWeights(**{name: value[order] for name, value in vars(moved).items()})


def apply_gauge(model: nn.Module, transform: GaugeTransform, inplace: bool = False) -> nn.Module:
    """Apply a gauge transformation: the returned model computes the same function.

    The arithmetic is float64; the result is cast to the model's dtype, so in float32 a
    transformation with condition number ``k`` changes outputs by round-off of order
    ``1e-7 * k``, in float64 by about ``1e-16 * k``.

    Args:
        model: Any model whose attention layers :func:`lit_emergence.heads.attention_layers`
            recognises; rotary layers need QK matrices that commute with their rotations.
        transform: From :func:`random_gauge`, :func:`identity_gauge` or built by hand.
        inplace: Overwrite ``model``'s weights instead of returning a transformed deep copy.

    Returns:
        The transformed model (``model`` itself when ``inplace``).

    Raises:
        ValueError: If the transformation's shapes do not fit the model, or a permutation row
            is not a permutation.

    """
    _check_transform(transform, _model_shape(model))
    target = model if inplace else copy.deepcopy(model)
    for index, layer in enumerate(attention_modules(target)):
        qk = transform.qk[index]
        if layer.rotary is not None and not commutes_with_rotary(qk, layer.rotary):
            raise ValueError(
                f"{layer.label} rotates queries and keys (rotary embeddings): its QK gauge "
                "matrices must commute with the rotations (random_gauge draws such)"
            )
        device = layer.device
        heads = transform_heads(
            layer.read_heads(),
            qk.to(device),
            transform.ov[index].to(device),
            transform.permutation[index].to(device),
        )
        layer.write_heads(heads)
    return target
