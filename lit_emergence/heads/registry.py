"""Finding the attention layers of any model: adapters and their registry.

An :class:`AttentionAdapter` knows one family of attention modules: whether a module is one
(:meth:`~AttentionAdapter.matches`), its head layout (:meth:`~AttentionAdapter.layer`), and how
to record its per-head attention pattern during a forward pass
(:meth:`~AttentionAdapter.hooks`, :meth:`~AttentionAdapter.recording`).
:func:`attention_layers` walks a model's modules in registration order and returns the layers
the adapters recognise, outermost first; it never guesses. Built-in adapters cover this
package's ``ParticleTransformer``, ``torch.nn.MultiheadAttention`` (alone or inside
``nn.TransformerEncoderLayer``/``DecoderLayer``), Hugging Face BERT-, GPT-2- and LLaMA-style
attention, and TransformerLens' ``HookedTransformer`` (:mod:`lit_emergence.heads.adapters`).

A model of your own needs a few lines::

    class MyAttentionAdapter(AttentionAdapter):
        def matches(self, module):
            return isinstance(module, MyAttention)

        def layer(self, name, module):
            return AttentionLayer(name, module, module.n_heads, module.d_head,
                                  query=HeadMap("wq.weight"), key=HeadMap("wk.weight"),
                                  value=HeadMap("wv.weight"), output=HeadMap("wo.weight"))

        def hooks(self, layer, record):  # MyAttention stores its softmax in .last_pattern
            return [layer.module.register_forward_hook(
                lambda module, args, out: record(module.last_pattern))]

    register_attention_adapter(MyAttentionAdapter())
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn
from torch.utils.hooks import RemovableHandle

from lit_emergence.heads.layout import AttentionLayer

__all__ = [
    "AttentionAdapter",
    "PatternRecorder",
    "attention_layers",
    "register_attention_adapter",
    "registered_adapters",
]

#: Receives one layer's attention pattern (B, H, N_query, N_key) from a hook; ``cross=True``
#: marks cross-attention (queries and keys from different sequences), which probes skip.
PatternRecorder = Callable[..., None]


class AttentionAdapter:
    """One family of attention modules: recognise, describe, record. Subclass and register."""

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is an attention layer of this family."""
        raise NotImplementedError

    def layer(self, name: str, module: nn.Module) -> AttentionLayer:
        """The head layout of ``module`` (found under qualified ``name``)."""
        raise NotImplementedError

    def hooks(self, layer: AttentionLayer, record: PatternRecorder) -> list[RemovableHandle]:
        """Install hooks that pass the layer's pattern to ``record`` on every forward call.

        Returns:
            The handles; the caller removes them.
        """
        raise NotImplementedError

    def recording(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """A context in which ``model``'s forward computes the patterns the hooks read.

        The default does nothing; e.g. Hugging Face models switch to eager attention here.
        """
        return contextlib.nullcontext()


_ADAPTERS: list[AttentionAdapter] = []


def register_attention_adapter(adapter: AttentionAdapter, first: bool = True) -> None:
    """Add an adapter to the registry.

    Args:
        adapter: The adapter.
        first: Try it before the adapters already registered (default), so a user's adapter
            wins over a built-in one that would also match.

    Raises:
        TypeError: If ``adapter`` is not an :class:`AttentionAdapter`.
    """
    if not isinstance(adapter, AttentionAdapter):
        raise TypeError(
            f"register_attention_adapter needs an AttentionAdapter, got {type(adapter).__name__}"
        )
    if adapter in _ADAPTERS:
        return
    if first:
        _ADAPTERS.insert(0, adapter)
    else:
        _ADAPTERS.append(adapter)


def registered_adapters() -> tuple[AttentionAdapter, ...]:
    """The adapters in the order they are tried."""
    _load_builtins()
    return tuple(_ADAPTERS)


def _load_builtins() -> None:
    # Imported on first use: the built-ins register themselves, after any user adapter.
    from lit_emergence.heads import adapters  # noqa: F401


def _walk(
    module: nn.Module, prefix: str = ""
) -> Iterator[tuple[str, nn.Module, AttentionAdapter | None]]:
    """Yield ``(name, module, its adapter or None)`` depth first, not into matched modules."""
    adapter = next((a for a in _ADAPTERS if a.matches(module)), None)
    yield prefix, module, adapter
    if adapter is None:
        for child_name, child in module.named_children():
            yield from _walk(child, f"{prefix}.{child_name}" if prefix else child_name)


def _looks_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return "attention" in name or name.endswith("attn")


def attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every attention layer of ``model``, in module order (the first block's first).

    Args:
        model: Any module: a LightningModule, a bare network, a Hugging Face model.

    Returns:
        One :class:`~lit_emergence.heads.layout.AttentionLayer` per attention module.

    Raises:
        ValueError: One line naming the attention-like module types no adapter fits (or saying
            that the model has none), and how to register an adapter.
    """
    _load_builtins()
    layers: list[AttentionLayer] = []
    unknown: dict[str, str] = {}
    for name, module, adapter in _walk(model):
        if adapter is not None:
            layer = adapter.layer(name, module)
            layer.adapter = adapter
            layers.append(layer)
        elif _looks_like_attention(module) and not any(
            True for _ in module.children() if _looks_like_attention(_)
        ):
            unknown.setdefault(type(module).__name__, name or "<model>")
    if layers:
        return layers
    if unknown:
        kinds = ", ".join(f"{kind} (at {where})" for kind, where in unknown.items())
        raise ValueError(
            f"no attention adapter fits {kinds} in {type(model).__name__}; register one with "
            "lit_emergence.heads.register_attention_adapter (see docs/callbacks.md)"
        )
    raise ValueError(
        f"found no attention layer in {type(model).__name__}; the callbacks recognise "
        "torch.nn.MultiheadAttention, Hugging Face BERT/GPT-2/LLaMA-style attention, "
        "TransformerLens and ParticleTransformer, or a registered adapter"
    )
