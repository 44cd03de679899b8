"""Singular value decomposition of a product ``M = left @ right^T`` from its thin factors.

``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` are (D, D) of rank at most Dh. Factoring each side
by a thin QR (``left = Q1 R1``, ``right = Q2 R2``) reduces the SVD to that of the small
(Dh, Dh) core ``R1 R2^T``: cheaper than a (D, D) SVD and as accurate, and it returns exactly Dh
singular triplets (zeros where the product is rank-deficient).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["factored_singular_values", "factored_svd"]


def factored_svd(left: Tensor, right: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SVD ``left @ right^T = U diag(S) V^T`` without forming the product.

    Args:
        left: (..., m, r) with ``m >= r``.
        right: (..., n, r) with ``n >= r``.

    Returns:
        ``(U, S, V)``: U (..., m, r) and V (..., n, r) with orthonormal columns, S (..., r)
        descending.

    """
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right)
    u_core, singular, vh_core = torch.linalg.svd(r_left @ r_right.transpose(-2, -1))
    return q_left @ u_core, singular, q_right @ vh_core.transpose(-2, -1)


def factored_singular_values(left: Tensor, right: Tensor) -> Tensor:
    """Singular values (..., r), descending, of ``left @ right^T`` (see :func:`factored_svd`)."""
    r_left = torch.linalg.qr(left, mode="r").R
    r_right = torch.linalg.qr(right, mode="r").R
    return torch.linalg.svdvals(r_left @ r_right.transpose(-2, -1))
