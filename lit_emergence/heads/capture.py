"""Recording every head's attention pattern during one forward pass of any supported model.

:func:`capture_attention` installs the adapters' hooks on every attention layer, runs one
forward pass, removes the hooks and returns the self-attention patterns as
``(B, L, H, N, N)``: entry ``[b, l, h, i, j]`` the weight of query ``i`` on key ``j`` in head
``h`` of the ``l``-th attention layer. :func:`call_model` is the default forward pass for a
batch of the usual shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_emergence.heads.layout import AttentionLayer
from lit_emergence.heads.registry import attention_layers

__all__ = ["HF_INPUT_KEYS", "call_model", "capture_attention"]

#: Keys of a Hugging Face batch passed to the model as keyword arguments (labels are not).
HF_INPUT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def call_model(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on the inputs of ``batch``, whatever its shape.

    ==============================================  =======================================
    batch                                           call
    ==============================================  =======================================
    a tensor                                        ``model(batch)``
    ``(inputs, target, ...)`` tuple or list         ``model(inputs)``
    dict with ``features`` (``ParticleDataModule``)  ``model(batch["features"])``
    dict with ``inputs`` (a probe set of pairs)     ``model(batch["inputs"])``
    dict with ``input_ids`` (Hugging Face)          ``model(input_ids=..., attention_mask=...)``
    a dataclass                                     as the dict of its fields
    ==============================================  =======================================

    Raises:
        ValueError: For a batch none of these fit (pass ``attention_fn=`` to the callback).
    """
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    if isinstance(batch, Tensor):
        return model(batch)
    if isinstance(batch, tuple | list) and batch:
        return model(batch[0])
    if isinstance(batch, Mapping):
        if "features" in batch:
            return model(batch["features"])
        if "inputs" in batch:
            return model(batch["inputs"])
        if "input_ids" in batch:
            return model(**{key: batch[key] for key in HF_INPUT_KEYS if key in batch})
        keys = ", ".join(sorted(map(str, batch))) or "none"
    else:
        keys = type(batch).__name__
    raise ValueError(
        f"cannot tell the model inputs of a batch with {keys}: expected a tensor, an (inputs, "
        "target) pair, or a dict with features, inputs or input_ids; pass attention_fn="
    )


def capture_attention(
    model: nn.Module,
    forward: Callable[[], Any],
    layers: list[AttentionLayer] | None = None,
) -> Tensor:
    """Run ``forward()`` once and return every self-attention layer's pattern.

    Gradients are off; the model's train/eval flags are the caller's (measure in eval mode).
    The switches some families need to expose their weights (eager attention, no fused
    MultiheadAttention fast path, the probe path) hold only during this call.

    Args:
        model: The module holding the attention layers (e.g. the LightningModule).
        forward: Runs the model once, e.g. ``lambda: call_model(model, batch)``.
        layers: The layers to record (default: :func:`attention_layers` of ``model``).

    Returns:
        (B, L, H, N, N) attention, L the self-attention layers that ran, first layer first.

    Raises:
        ValueError: If a layer ran more than once, none ran, or the patterns differ in shape.
    """
    layers = attention_layers(model) if layers is None else layers
    recorded: list[list[Tensor]] = [[] for _ in layers]
    handles = []

    def recorder(index: int) -> Callable[..., None]:
        def record(pattern: Tensor, cross: bool = False) -> None:
            if not cross:
                recorded[index].append(pattern.detach())

        return record

    adapters = {id(layer.adapter): layer.adapter for layer in layers}
    with contextlib.ExitStack() as stack, torch.no_grad():
        for adapter in adapters.values():
            stack.enter_context(adapter.recording(model))
        try:
            for index, layer in enumerate(layers):
                handles.extend(layer.adapter.hooks(layer, recorder(index)))
            forward()
        finally:
            for handle in handles:
                handle.remove()
    patterns = []
    for layer, found in zip(layers, recorded, strict=True):
        if len(found) > 1:
            raise ValueError(
                f"attention layer {layer.label} ran {len(found)} times in one forward pass; "
                "pass attention_fn= to the callback to say which call to measure"
            )
        patterns.extend(found)
    if not patterns:
        raise ValueError(
            f"no self-attention layer of {type(model).__name__} ran in the forward pass; "
            "check the model call or pass attention_fn= to the callback"
        )
    shapes = {tuple(p.shape) for p in patterns}
    if len(shapes) != 1:
        raise ValueError(
            f"the attention layers of {type(model).__name__} give patterns of shapes "
            f"{sorted(shapes)}; the probes need one (B, H, N, N): pass attention_fn="
        )
    return torch.stack(patterns, dim=1)
