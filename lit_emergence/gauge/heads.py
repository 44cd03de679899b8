"""The per-head weights of a model's attention layers, read and written in the maths convention.

For head ``h`` of an attention layer:

================  =============================  ==========================================
maths             shape                          e.g. ``ParticleTransformer`` storage
================  =============================  ==========================================
``W_Q``           (D, Dh)                        ``q_proj.weight[rows].T``
``b_Q``           (Dh,)                          ``q_proj.bias[rows]``
``W_K``, ``b_K``  (D, Dh), (Dh,)                 ``k_proj`` alike
``W_V``, ``b_V``  (D, Dh), (Dh,)                 ``v_proj`` alike
``W_O``           (Dh, D)                        ``out_proj.weight[:, rows].T``
================  =============================  ==========================================

so that ``q_h = x W_Q + b_Q`` and the head adds ``z_h W_O`` to the layer output (``z_h`` the
attention-weighted values). The storage of other models (fused ``in_proj_weight``, GPT-2's
``Conv1D``, TransformerLens' per-head tensors) is described by their
:class:`~lit_emergence.heads.AttentionLayer`; every gauge function works on any layout
:func:`lit_emergence.heads.attention_layers` recognises. :class:`HeadWeights` holds every head of
a layer at once, in float64, stacked along a leading head axis; :func:`read_heads` and
:func:`write_heads` convert between it and the model. The output bias is added after the heads
are summed: it belongs to no head and no gauge transformation touches it.
"""

from __future__ import annotations

from torch import nn

from lit_emergence.heads import AttentionLayer, HeadWeights, attention_layers

__all__ = ["HeadWeights", "attention_modules", "read_heads", "write_heads"]


def attention_modules(model: nn.Module) -> list[AttentionLayer]:
    """The attention layers of ``model``, first layer first.

    Args:
        model: Any model with attention layers :func:`lit_emergence.heads.attention_layers`
            recognises (a ``ParticleTransformer``, a ``LearnedSimulator``, an
            ``nn.TransformerEncoder``, a Hugging Face model, a LightningModule holding one).

    Returns:
        One :class:`~lit_emergence.heads.AttentionLayer` per attention module.

    Raises:
        ValueError: One line naming the attention module no adapter fits.

    """
    return attention_layers(model)


def _layer(attn: nn.Module | AttentionLayer) -> AttentionLayer:
    if isinstance(attn, AttentionLayer):
        return attn
    layers = attention_layers(attn)
    if len(layers) != 1 or layers[0].module is not attn:
        raise ValueError(
            f"read_heads/write_heads take one attention layer, got {type(attn).__name__}; "
            "use attention_modules(model) to list a model's layers"
        )
    return layers[0]


def read_heads(attn: nn.Module | AttentionLayer) -> HeadWeights:
    """Copy the heads of one attention layer into a :class:`HeadWeights` (float64).

    Args:
        attn: An :class:`~lit_emergence.heads.AttentionLayer` (from :func:`attention_modules`)
            or one attention module.

    Returns:
        Detached float64 copies; the module is not touched.

    """
    return _layer(attn).read_heads()


def write_heads(attn: nn.Module | AttentionLayer, heads: HeadWeights) -> None:
    """Write a :class:`HeadWeights` back into an attention layer, in its dtype.

    Args:
        attn: The layer to overwrite (its Q/K/V weights and biases and ``W_O``; the output
            bias is left alone).
        heads: Weights of the same shapes as :func:`read_heads` returns.

    Raises:
        ValueError: If the module has no bias where ``heads`` has a non-zero one, or heads that
            share key/value weights (grouped-query attention) are given different ones.

    """
    _layer(attn).write_heads(heads)
