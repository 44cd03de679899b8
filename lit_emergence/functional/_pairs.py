"""Input checks and pair masks shared by the attention-structure functions.

Shapes: B scenes, L layers, H heads per layer, N particles per scene.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

#: Largest number of attention entries copied to float64 at once; bigger batches are split into
#: chunks of scenes (128 MiB of float64 per chunk).
MAX_CHUNK_ELEMENTS = 2**24


def check_attention(attention: Tensor, name: str) -> tuple[int, int, int, int, int]:
    """Check that ``attention`` is a floating (B, L, H, N, N) tensor and return its shape."""
    if attention.ndim != 5 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(
            f"{name}: attention must have shape (B, L, H, N, N), got {tuple(attention.shape)}; "
            "pass the stacked per-layer patterns of ParticleTransformer(return_attention=True)"
        )
    if not attention.is_floating_point():
        raise ValueError(f"{name}: attention must be a floating tensor, got {attention.dtype}")
    B, L, H, N, _ = attention.shape
    return B, L, H, N, N


def check_mask(mask: Tensor | None, shape: tuple[int, ...], label: str, name: str) -> None:
    """Check that an optional mask is a bool tensor of the given shape."""
    if mask is None:
        return
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"{name}: {label} must be a bool tensor of shape {shape}, got "
            f"{mask.dtype} {tuple(mask.shape)}; pass a bool mask (True = included)"
        )


def check_positions(positions: Tensor, name: str) -> tuple[int, int]:
    """Check that ``positions`` is floating (B, N) or (B, N, D) and return ``(B, N)``.

    (B, N) holds 1-D positions (a token's index in its sequence, a time); (B, N, D) points in
    D dimensions (particle centres: D = 2).
    """
    if (
        positions.ndim not in (2, 3)
        or positions.shape[-1] == 0
        or not (positions.is_floating_point())
    ):
        raise ValueError(
            f"{name}: positions must be a floating tensor of shape (B, N) (1-D, e.g. token "
            f"index) or (B, N, D), got {positions.dtype} {tuple(positions.shape)}"
        )
    return positions.shape[0], positions.shape[1]


def as_points(positions: Tensor) -> Tensor:
    """(B, N, D) points from checked positions: 1-D (B, N) positions become (B, N, 1)."""
    return positions.unsqueeze(-1) if positions.ndim == 2 else positions


def valid_pairs(valid: Tensor | None, batch: int, num: int, device: torch.device) -> Tensor:
    """Ordered pairs ``(i, j)`` with ``i != j`` and both particles real: (B, N, N) bool.

    Args:
        valid: Optional (B, N) bool, True for real particles; None means all are real.
        batch: Number of scenes B.
        num: Particles per scene N.
        device: Device of the result.

    Returns:
        (B, N, N) bool mask, the diagonal always False.

    """
    off_diagonal = ~torch.eye(num, dtype=torch.bool, device=device)  # (N, N)
    if valid is None:
        return off_diagonal.expand(batch, num, num)
    return off_diagonal & valid[:, :, None] & valid[:, None, :]  # (B, N, N)


def scene_chunks(batch: int, elements_per_scene: int) -> Iterator[slice]:
    """Split ``range(batch)`` into slices of at most :data:`MAX_CHUNK_ELEMENTS` elements each.

    A chunk holds at least one scene, so a single huge scene is processed whole.
    """
    size = max(1, MAX_CHUNK_ELEMENTS // max(1, elements_per_scene))
    for start in range(0, batch, size):
        yield slice(start, min(start + size, batch))
