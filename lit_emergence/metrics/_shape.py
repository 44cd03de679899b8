"""Shape checks shared by the metric classes."""

from __future__ import annotations

from torch import Tensor


def check_heads(num_layers: int, num_heads: int, name: str) -> None:
    """Raise ValueError unless both counts are positive integers."""
    for label, value in (("num_layers", num_layers), ("num_heads", num_heads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {label}={value!r} must be a positive integer")


def check_attention_heads(attention: Tensor, num_layers: int, num_heads: int, name: str) -> None:
    """Raise ValueError unless ``attention`` is (B, L, H, N, N) with the metric's L and H."""
    if attention.ndim != 5 or tuple(attention.shape[1:3]) != (num_layers, num_heads):
        raise ValueError(
            f"{name}: attention {tuple(attention.shape)} does not match the metric's "
            f"(B, L={num_layers}, H={num_heads}, N, N); create the metric with the model's "
            "n_layers and n_heads"
        )
