"""Attention heads of any model: find the layers, read each head's weights, record patterns.

One abstraction serves every callback: :func:`attention_layers` returns the model's attention
layers (:class:`AttentionLayer`: number of heads, head width, where each head's ``W_Q``,
``W_K``, ``W_V``, ``W_O`` and biases live), found by registered adapters; the layer reads and
writes heads in the maths convention (:class:`HeadWeights`) and names each head's parameter
entries (per-head LLC); :func:`capture_attention` records the per-head patterns of one forward
pass. Built in: this package's ``ParticleTransformer``, ``torch.nn.MultiheadAttention``
(including inside ``nn.TransformerEncoderLayer`` and its fast path), Hugging Face BERT-, GPT-2-
and LLaMA-style attention, TransformerLens. Add your own with
:func:`register_attention_adapter` (see ``docs/callbacks.md``).
"""

from lit_emergence.heads.capture import call_model, capture_attention
from lit_emergence.heads.layout import AttentionLayer, HeadMap
from lit_emergence.heads.registry import (
    AttentionAdapter,
    attention_layers,
    register_attention_adapter,
    registered_adapters,
)
from lit_emergence.heads.weights import HeadWeights

__all__ = [
    "AttentionAdapter",
    "AttentionLayer",
    "HeadMap",
    "HeadWeights",
    "attention_layers",
    "call_model",
    "capture_attention",
    "register_attention_adapter",
    "registered_adapters",
]
