"""Every head of one attention layer in the maths convention, float64, head axis first.

For head ``h`` the layer computes ``q_h = x W_Q + b_Q``, ``k_h = x W_K + b_K``,
``v_h = x W_V + b_V`` on row vectors ``x`` of the residual stream (width D), attends with
``softmax(q_h k_h^T / sqrt(Dh))`` and adds ``z_h W_O`` to the layer output (``z_h`` the
attention-weighted values, width Dh). An output bias is added after the heads are summed: it
belongs to no head. How a given model stores these maps (``nn.Linear`` (out, in), fused
``in_proj_weight``, GPT-2's ``Conv1D`` (in, out), TransformerLens' per-head tensors) is the
business of :mod:`lit_emergence.heads.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HeadWeights"]


@dataclass
class HeadWeights:
    """Every head of one attention block in the maths convention, float64, head axis first.

    Attributes:
        query: ``W_Q`` per head, (H, D, Dh).
        query_bias: ``b_Q`` per head, (H, Dh).
        key: ``W_K``, (H, D, Dh).
        key_bias: ``b_K``, (H, Dh).
        value: ``W_V``, (H, D, Dh).
        value_bias: ``b_V``, (H, Dh).
        output: ``W_O``, (H, Dh, D).

    """

    query: Tensor
    query_bias: Tensor
    key: Tensor
    key_bias: Tensor
    value: Tensor
    value_bias: Tensor
    output: Tensor

    @property
    def num_heads(self) -> int:
        """H, heads in the block."""
        return self.query.shape[0]

    @property
    def head_dim(self) -> int:
        """Dh, width of one head."""
        return self.query.shape[-1]

    def augmented_query(self) -> Tensor:
        """``[W_Q; b_Q]`` (H, D + 1, Dh): the query map on the input with a constant 1 appended."""
        return torch.cat([self.query, self.query_bias[:, None]], dim=1)

    def augmented_key(self) -> Tensor:
        """``[W_K; b_K]`` (H, D + 1, Dh)."""
        return torch.cat([self.key, self.key_bias[:, None]], dim=1)

    def augmented_value(self) -> Tensor:
        """``[W_V; b_V]`` (H, D + 1, Dh)."""
        return torch.cat([self.value, self.value_bias[:, None]], dim=1)
