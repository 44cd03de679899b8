"""The built-in attention adapters, recognised by structure (no import of their libraries).

==========================  =================================  ==================================
family                      recognised by                      pattern recorded from
==========================  =================================  ==================================
ParticleTransformer         ``n_heads``, ``head_slice``,        the probe path (``return_pattern``
                            ``q/k/v/out_proj``, ``hook_pattern``  forced on while recording)
``nn.MultiheadAttention``   the type                           ``need_weights=True`` with
                                                               per-head weights forced while
                                                               recording; the encoder layer's
                                                               fused fast path is switched off
Hugging Face BERT-style     ``.self.query/key/value``,          the self-attention's returned
                            ``.output.dense``                   weights, eager attention while
                                                               recording
Hugging Face GPT-2-style    ``c_attn``, ``c_proj`` (Conv1D)     as above
Hugging Face LLaMA-style    ``q/k/v_proj``, ``o_proj``,         as above (rotary, grouped K/V)
                            ``config.num_attention_heads``
TransformerLens             ``W_Q``/``W_K``/``W_V``/``W_O``       ``hook_pattern``
                            (H, ·, ·), ``hook_pattern``
==========================  =================================  ==================================

Recording never changes what the model computes in training: the switches (probe path, eager
attention, no fast path) hold only inside :func:`lit_emergence.heads.capture_attention`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lit_emergence.heads.layout import AttentionLayer, HeadMap
from lit_emergence.heads.registry import (
    AttentionAdapter,
    PatternRecorder,
    register_attention_adapter,
)

__all__ = [
    "BertAttentionAdapter",
    "GPT2AttentionAdapter",
    "LlamaAttentionAdapter",
    "MultiheadAttentionAdapter",
    "ParticleAttentionAdapter",
    "TransformerLensAdapter",
]


def _has(module: Any, *names: str) -> bool:
    return all(hasattr(module, name) for name in names)


def _record_output(module: nn.Module, record: PatternRecorder, item: int = 1) -> RemovableHandle:
    """Hook passing ``output[item]`` (the module's returned attention weights) to ``record``."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        pattern = output[item] if isinstance(output, tuple | list) else None
        if pattern is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no attention weights while recording; its "
                "adapter's recording() context must make it return them"
            )
        record(pattern)

    return module.register_forward_hook(hook)


class ParticleAttentionAdapter(AttentionAdapter):
    """:class:`lit_emergence.model.MultiHeadSelfAttention` (this package's model)."""

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        return _has(module, "n_heads", "head_slice", "q_proj", "k_proj", "v_proj", "out_proj")

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        return AttentionLayer(
            name,
            module,
            module.n_heads,
            module.head_dim,
            query=HeadMap("q_proj.weight", _bias_path(module.q_proj, "q_proj")),
            key=HeadMap("k_proj.weight", _bias_path(module.k_proj, "k_proj")),
            value=HeadMap("v_proj.weight", _bias_path(module.v_proj, "v_proj")),
            output=HeadMap("out_proj.weight"),
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        def probe_path(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            # forward(x, allowed, no_key, return_pattern): compute the softmax explicitly
            if len(args) >= 4:
                args = (*args[:3], True, *args[4:])
            else:
                kwargs = {**kwargs, "return_pattern": True}
            return args, kwargs

        return [
            layer.module.register_forward_pre_hook(probe_path, with_kwargs=True),
            _record_output(layer.module, record),
        ]


def _bias_path(linear: nn.Module, prefix: str) -> str | None:
    return f"{prefix}.bias" if getattr(linear, "bias", None) is not None else None


class MultiheadAttentionAdapter(AttentionAdapter):
    """``torch.nn.MultiheadAttention``, wherever it sits (fused or separate Q/K/V weights)."""

    _ARGUMENTS = (
        "query",
        "key",
        "value",
        "key_padding_mask",
        "need_weights",
        "attn_mask",
        "average_attn_weights",
        "is_causal",
    )

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        return isinstance(module, nn.MultiheadAttention)

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        if module.bias_k is not None:
            raise ValueError(
                f"nn.MultiheadAttention at {name or '<model>'} has add_bias_kv=True: its extra "
                "key/value token is not a particle; the callbacks do not support it"
            )
        embed = module.embed_dim
        bias = "in_proj_bias" if module.in_proj_bias is not None else None
        if module._qkv_same_embed_dim:
            maps = [HeadMap("in_proj_weight", bias, "out_in", i * embed) for i in range(3)]
        else:  # kdim/vdim != embed_dim: separate weights, one fused bias
            maps = [
                HeadMap(f"{part}_proj_weight", bias, "out_in", 0, bias_offset=i * embed)
                for i, part in enumerate("qkv")
            ]
        return AttentionLayer(
            name,
            module,
            module.num_heads,
            module.head_dim,
            query=maps[0],
            key=maps[1],
            value=maps[2],
            output=HeadMap("out_proj.weight"),
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        calls: list[bool] = []

        def want_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            bound = dict(zip(self._ARGUMENTS, args, strict=False)) | kwargs
            calls.append(bound.get("key") is not bound.get("query"))
            bound["need_weights"] = True
            bound["average_attn_weights"] = False
            return (), bound

        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            record(output[1], cross=calls.pop())

        return [
            layer.module.register_forward_pre_hook(want_weights, with_kwargs=True),
            layer.module.register_forward_hook(keep),
        ]

    def recording(self, model: nn.Module) -> contextlib.AbstractContextManager:  # noqa: D102
        return _mha_fast_path_off()


@contextlib.contextmanager
def _mha_fast_path_off() -> Iterator[None]:
    # The encoder layer's fused kernel never calls self_attn.forward, so no hook would fire.
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Hugging Face models: eager attention (which returns its weights) while recording."""
    configs = {
        id(config): config
        for module in model.modules()
        if (config := getattr(module, "config", None)) is not None
        and hasattr(config, "_attn_implementation")
    }
    before = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = before[key]


class _HuggingFaceAdapter(AttentionAdapter):
    """What the Hugging Face families share: eager attention returns ``(output, weights)``."""

    def recording(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return _eager_attention(model)


class BertAttentionAdapter(_HuggingFaceAdapter):
    """BERT-style attention (RoBERTa, ELECTRA, ...): ``.self`` has Q/K/V, ``.output.dense`` W_O."""

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        inner = getattr(module, "self", None)
        return (
            _has(inner, "query", "key", "value", "num_attention_heads", "attention_head_size")
            and hasattr(getattr(module, "output", None), "dense")
            and not getattr(inner, "is_cross_attention", False)
        )

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        inner = module.self
        return AttentionLayer(
            name,
            module,
            inner.num_attention_heads,
            inner.attention_head_size,
            query=HeadMap("self.query.weight", _bias_path(inner.query, "self.query")),
            key=HeadMap("self.key.weight", _bias_path(inner.key, "self.key")),
            value=HeadMap("self.value.weight", _bias_path(inner.value, "self.value")),
            output=HeadMap("output.dense.weight"),
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        return [_record_output(layer.module.self, record)]


class GPT2AttentionAdapter(_HuggingFaceAdapter):
    """GPT-2-style attention: fused ``c_attn`` and ``c_proj``, both ``Conv1D`` (in, out)."""

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        return _has(module, "c_attn", "c_proj", "num_heads", "head_dim") and not getattr(
            module, "is_cross_attention", False
        )

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        width = module.num_heads * module.head_dim
        bias = _bias_path(module.c_attn, "c_attn")
        return AttentionLayer(
            name,
            module,
            module.num_heads,
            module.head_dim,
            query=HeadMap("c_attn.weight", bias, "in_out", 0),
            key=HeadMap("c_attn.weight", bias, "in_out", width),
            value=HeadMap("c_attn.weight", bias, "in_out", 2 * width),
            output=HeadMap("c_proj.weight", None, "in_out"),
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        return [_record_output(layer.module, record)]


class LlamaAttentionAdapter(_HuggingFaceAdapter):
    """LLaMA-style attention (also Mistral, Qwen2, ...): rotary, possibly grouped K/V."""

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        config = getattr(module, "config", None)
        return _has(module, "q_proj", "k_proj", "v_proj", "o_proj", "head_dim") and _has(
            config, "num_attention_heads"
        )

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        config = module.config
        heads = config.num_attention_heads
        rotary = "position_embeddings" in inspect.signature(module.forward).parameters
        return AttentionLayer(
            name,
            module,
            heads,
            module.head_dim,
            query=HeadMap("q_proj.weight", _bias_path(module.q_proj, "q_proj")),
            key=HeadMap("k_proj.weight", _bias_path(module.k_proj, "k_proj")),
            value=HeadMap("v_proj.weight", _bias_path(module.v_proj, "v_proj")),
            output=HeadMap("o_proj.weight"),
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            rotary="half" if rotary else None,
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        return [_record_output(layer.module, record)]


class TransformerLensAdapter(AttentionAdapter):
    """TransformerLens ``HookedTransformer`` attention: per-head ``W_Q[h]`` (D, Dh) tensors."""

    def matches(self, module: nn.Module) -> bool:  # noqa: D102
        weights = [getattr(module, name, None) for name in ("W_Q", "W_K", "W_V", "W_O")]
        return hasattr(module, "hook_pattern") and all(
            isinstance(w, torch.Tensor) and w.ndim == 3 for w in weights
        )

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:  # noqa: D102
        heads, _, head_dim = module.W_Q.shape
        config = getattr(module, "cfg", None)
        rotary = getattr(config, "positional_embedding_type", None) == "rotary"
        adjacent = bool(getattr(config, "rotary_adjacent_pairs", False))

        def bias(path: str) -> str | None:
            return path if isinstance(getattr(module, path, None), torch.Tensor) else None

        return AttentionLayer(
            name,
            module,
            heads,
            head_dim,
            query=HeadMap("W_Q", bias("b_Q"), "head_in_out"),
            key=HeadMap("W_K", bias("b_K"), "head_in_out"),
            value=HeadMap("W_V", bias("b_V"), "head_in_out"),
            output=HeadMap("W_O", None, "head_in_out"),
            rotary=("adjacent" if adjacent else "half") if rotary else None,
        )

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:  # noqa: D102
        return [
            layer.module.hook_pattern.register_forward_hook(
                lambda _module, _args, pattern: record(pattern)
            )
        ]


# Tried in this order, after any adapter a user registers (no two of them match one module).
for _adapter in (
    TransformerLensAdapter(),
    MultiheadAttentionAdapter(),
    GPT2AttentionAdapter(),
    LlamaAttentionAdapter(),
    BertAttentionAdapter(),
    ParticleAttentionAdapter(),
):
    register_attention_adapter(_adapter, first=False)
