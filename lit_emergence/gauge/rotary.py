r"""The QK gauge of a head with rotary position embeddings (RoPE).

RoPE rotates each head's queries and keys by a position-dependent rotation ``R_m`` before the
scores are taken: ``score = (q R_m)(k R_n)^T``. The QK gauge ``W_Q -> W_Q A``,
``W_K -> W_K A^{-T}`` keeps the function only if ``A R = R A`` for every rotation, that is
(with distinct frequencies, as RoPE uses) if ``A`` maps each rotation plane to itself as a
scaled rotation: a complex number per plane. Planes are coordinate pairs ``(i, i + Dh/2)``
("half", Hugging Face's ``rotate_half``) or ``(2i, 2i + 1)`` ("adjacent").
:func:`rotary_generator` is the generator of the rotations (distinct weight per plane);
``A`` commutes with every ``R_m`` iff it commutes with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["commutes_with_rotary", "random_rotary_commuting", "rotary_generator", "rotary_planes"]


def rotary_planes(dim: int, pairing: str) -> list[tuple[int, int]]:
    """The coordinate pairs that rotate together, for an even head width ``dim``."""
    if dim % 2:
        raise ValueError(f"a rotary head needs an even width, got {dim}")
    half = dim // 2
    if pairing == "half":
        return [(i, i + half) for i in range(half)]
    if pairing == "adjacent":
        return [(2 * i, 2 * i + 1) for i in range(half)]
    raise ValueError(f"rotary pairing {pairing!r} is unknown; use 'half' or 'adjacent'")


def rotary_generator(dim: int, pairing: str) -> Tensor:
    """(dim, dim) float64 skew generator with weight ``p + 1`` on plane ``p``."""
    generator = torch.zeros(dim, dim, dtype=torch.float64)
    for plane, (a, b) in enumerate(rotary_planes(dim, pairing)):
        generator[b, a] = plane + 1.0
        generator[a, b] = -(plane + 1.0)
    return generator


def commutes_with_rotary(matrices: Tensor, pairing: str, rtol: float = 1e-9) -> bool:
    """Whether every (..., Dh, Dh) matrix commutes with the rotary rotations."""
    generator = rotary_generator(matrices.shape[-1], pairing).to(matrices)
    gap = (matrices @ generator - generator @ matrices).abs().amax()
    return bool(gap <= rtol * matrices.abs().amax().clamp_min(1.0))


def random_rotary_commuting(
    dim: int,
    pairing: str,
    condition_number: float,
    generator: torch.Generator,
    batch: tuple[int, ...] = (),
) -> Tensor:
    """Random matrices that commute with RoPE: a scaled rotation per plane (float64).

    Scales are log-uniform in ``[k^-1/2, k^1/2]`` (``k`` the condition number), angles uniform.

    Returns:
        (*batch, dim, dim) float64.
    """
    planes = rotary_planes(dim, pairing)
    count = len(planes)
    log_k = torch.log(torch.tensor(float(condition_number), dtype=torch.float64))
    scale = torch.exp(
        (torch.rand(*batch, count, generator=generator, dtype=torch.float64) - 0.5) * log_k
    )
    angle = torch.rand(*batch, count, generator=generator, dtype=torch.float64) * 2 * torch.pi
    matrix = torch.zeros(*batch, dim, dim, dtype=torch.float64)
    for plane, (a, b) in enumerate(planes):
        c, s = (
            scale[..., plane] * torch.cos(angle[..., plane]),
            scale[..., plane] * torch.sin(angle[..., plane]),
        )
        matrix[..., a, a], matrix[..., a, b] = c, -s
        matrix[..., b, a], matrix[..., b, b] = s, c
    return matrix
