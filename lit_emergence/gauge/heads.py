"""The per-head weights of attention blocks, read and written in the maths convention.

A block's ``nn.Linear`` layers store ``weight`` as (out, in); the gauge literature writes a
head as maps acting on row vectors. For head ``h`` (rows ``attn.head_slice(h)``):

================  =============================  ==========================================
maths             shape                          torch storage
================  =============================  ==========================================
``W_Q``           (D, Dh)                        ``q_proj.weight[rows].T``
``b_Q``           (Dh,)                          ``q_proj.bias[rows]``
``W_K``, ``b_K``  (D, Dh), (Dh,)                 ``k_proj`` alike
``W_V``, ``b_V``  (D, Dh), (Dh,)                 ``v_proj`` alike
``W_O``           (Dh, D)                        ``out_proj.weight[:, rows].T``
================  =============================  ==========================================

so that ``q_h = x W_Q + b_Q`` and the head adds ``z_h W_O`` to the block output (``z_h`` the
attention-weighted values). :class:`HeadWeights` holds these for every head of a block at once,
in float64, stacked along a leading head axis; :func:`read_heads` and :func:`write_heads`
convert between it and the model. ``out_proj.bias`` is added after the heads are summed: it
belongs to no head and no gauge transformation touches it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_emergence.model import block_attentions

__all__ = ["HeadWeights", "attention_modules", "read_heads", "write_heads"]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of every block, first block first.

    Args:
        model: A :class:`~lit_emergence.model.ParticleTransformer` (anything with ``blocks``
            whose items have ``attn`` with ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and
            ``head_slice``), or a module holding one as ``.model`` (a
            :class:`~lit_emergence.module.LearnedSimulator`).

    Returns:
        ``[model.blocks[0].attn, model.blocks[1].attn, ...]``.

    Raises:
        ValueError: If the model has no such blocks.

    """
    try:
        return block_attentions(model)
    except ValueError as error:
        raise ValueError(f"{error}; pass a ParticleTransformer or a LearnedSimulator") from None


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


def _bias(linear: nn.Linear, num_heads: int, head_dim: int) -> Tensor:
    if linear.bias is None:  # a model built without biases: the same maths with b = 0
        return linear.weight.new_zeros(num_heads, head_dim, dtype=torch.float64)
    return linear.bias.detach().to(torch.float64, copy=True).view(num_heads, head_dim)


def read_heads(attn: nn.Module) -> HeadWeights:
    """Copy the heads of one attention module into a :class:`HeadWeights` (float64).

    Args:
        attn: A :class:`~lit_emergence.model.MultiHeadSelfAttention`.

    Returns:
        Detached float64 copies; the module is not touched.

    """
    H, Dh = attn.n_heads, attn.head_dim

    def rows(linear: nn.Linear) -> Tensor:  # (H, D, Dh): W = weight[rows].T per head
        return linear.weight.detach().to(torch.float64, copy=True).view(H, Dh, -1).transpose(1, 2)

    out_weight = attn.out_proj.weight.detach().to(torch.float64, copy=True)  # (D, H * Dh)
    return HeadWeights(
        query=rows(attn.q_proj),
        query_bias=_bias(attn.q_proj, H, Dh),
        key=rows(attn.k_proj),
        key_bias=_bias(attn.k_proj, H, Dh),
        value=rows(attn.v_proj),
        value_bias=_bias(attn.v_proj, H, Dh),
        output=out_weight.view(-1, H, Dh).permute(1, 2, 0),  # (H, Dh, D)
    )


@torch.no_grad()
def write_heads(attn: nn.Module, heads: HeadWeights) -> None:
    """Write a :class:`HeadWeights` back into an attention module, in its dtype.

    Args:
        attn: The module to overwrite (its ``q/k/v_proj`` weights and biases and
            ``out_proj.weight``; ``out_proj.bias`` is left alone).
        heads: Weights of the same shapes as :func:`read_heads` returns.

    Raises:
        ValueError: If the module has no bias where ``heads`` has a non-zero one.

    """
    pairs = (
        (attn.q_proj, heads.query, heads.query_bias),
        (attn.k_proj, heads.key, heads.key_bias),
        (attn.v_proj, heads.value, heads.value_bias),
    )
    for linear, weight, bias in pairs:
        linear.weight.copy_(weight.transpose(1, 2).reshape(linear.weight.shape))
        if linear.bias is not None:
            linear.bias.copy_(bias.reshape(linear.bias.shape))
        elif bool(bias.ne(0).any()):
            raise ValueError("cannot write a non-zero bias into a projection built without one")
    out_weight = attn.out_proj.weight
    out_weight.copy_(heads.output.permute(2, 0, 1).reshape(out_weight.shape))
