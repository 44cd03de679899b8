"""Which coordinates of a model an LLC estimate samples: restrictions and per-head masks.

A *restriction* selects the coordinates that SGLD moves; every other coordinate stays frozen
at the point of estimation ``w*``. Accepted forms:

- ``None`` or ``"all"``: every parameter with ``requires_grad=True`` (parameters that do not
  require grad stay frozen, as an optimizer would leave them).
- A list (or tuple) of parameter names: those whole tensors, whether or not they require grad.
- A dict ``name -> bool tensor`` of the parameter's shape: the True entries of each named
  tensor (parameters not in the dict are frozen).

:func:`resolve_restriction` turns any of these into a dict ``name -> bool mask`` holding only
the tensors with at least one sampled entry. :func:`attention_head_restriction` builds the
weight-refined restriction of one attention head of any model whose attention layers
:func:`lit_emergence.heads.attention_layers` recognises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lit_emergence.heads import attention_layers
from lit_emergence.records.schema import WHOLE_MODEL, llc_component

__all__ = [
    "Restriction",
    "attention_head_restriction",
    "attention_head_restrictions",
    "resolve_restriction",
]

Restriction = str | Sequence[str] | Mapping[str, Tensor] | None
"""``None``/``"all"``, a list of parameter names, or a dict ``name -> bool mask``."""


def resolve_restriction(
    parameters: Mapping[str, Tensor], restriction: Restriction
) -> dict[str, Tensor]:
    """Turn a restriction into bool masks over the parameters it samples.

    Args:
        parameters: The model's parameters by name (``dict(model.named_parameters())``).
        restriction: ``None``/``"all"``, a sequence of names, or a dict ``name -> bool mask``
            (see the module docstring).

    Returns:
        Dict ``name -> bool mask`` (on the parameter's device, the parameter's shape), in the
        order of ``parameters``, holding only tensors with at least one sampled entry.

    Raises:
        ValueError: For an unknown name, a mask of the wrong shape or dtype, or a restriction
            that samples no coordinate at all.

    """
    if restriction is None or (isinstance(restriction, str) and restriction == "all"):
        masks = {
            name: torch.ones_like(p, dtype=torch.bool)
            for name, p in parameters.items()
            if p.requires_grad
        }
    elif isinstance(restriction, str):
        raise ValueError(
            f"restriction={restriction!r} is not understood; use None or 'all' for the whole "
            "model, a list of parameter names, or a dict name -> bool mask"
        )
    elif isinstance(restriction, Mapping):
        masks = {}
        for name, mask in restriction.items():
            _check_name(parameters, name)
            param = parameters[name]
            mask = torch.as_tensor(mask, device=param.device)
            if mask.dtype != torch.bool or mask.shape != param.shape:
                raise ValueError(
                    f"restriction mask for {name!r} is {mask.dtype} {tuple(mask.shape)}; "
                    f"pass a bool tensor of the parameter's shape {tuple(param.shape)}"
                )
            masks[name] = mask
    else:
        names = list(restriction)
        for name in names:
            _check_name(parameters, name)
        masks = {name: torch.ones_like(parameters[name], dtype=torch.bool) for name in names}

    # keep the model's parameter order: it fixes the order in which noise is drawn
    masks = {name: masks[name] for name in parameters if name in masks and bool(masks[name].any())}
    if not masks:
        raise ValueError(
            "restriction samples no coordinate (all masks False or no parameter requires "
            "grad); select at least one parameter entry"
        )
    return masks


def _check_name(parameters: Mapping[str, Tensor], name: str) -> None:
    if name not in parameters:
        known = ", ".join(list(parameters)[:6])
        raise ValueError(
            f"restriction names unknown parameter {name!r}; use names from "
            f"model.named_parameters(), e.g. {known}, ..."
        )


def attention_head_restriction(model: nn.Module, layer: int, head: int) -> dict[str, Tensor]:
    """Masks selecting one attention head's weights: the weight-refined (per-head) restriction.

    The head owns its block of the query, key and value weights (and the same entries of their
    biases) and its block of the output projection's input side; the output bias is added
    after the heads are summed, so it belongs to no head and is not sampled. For a
    ``ParticleTransformer`` that is rows ``h*Dh:(h+1)*Dh`` of ``q_proj``, ``k_proj``,
    ``v_proj`` and columns ``h*Dh:(h+1)*Dh`` of ``out_proj.weight``: ``4 * Dh * D + 3 * Dh``
    coordinates (D the model width, Dh the head width). Fused ``in_proj_weight``, GPT-2's
    ``c_attn`` and TransformerLens' per-head tensors are split the same way; in a
    grouped-query layer the head's key/value entries are its group's shared ones.

    Args:
        model: Any model whose attention layers :func:`lit_emergence.heads.attention_layers`
            recognises (``layer`` counts them in module order).
        layer: Attention layer index.
        head: Head index within the layer.

    Returns:
        Dict ``parameter name -> bool mask`` for :func:`~lit_emergence.llc.estimate_llc`'s
        ``restrict`` argument.

    Raises:
        ValueError: If the model has no such layer or head.

    """
    layers = attention_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(
            f"layer={layer} is out of range; the model has {len(layers)} attention layers"
        )
    if not 0 <= head < layers[layer].num_heads:
        raise ValueError(
            f"head={head} is out of range; layer {layer} has {layers[layer].num_heads} heads"
        )
    return layers[layer].head_masks(head)


def attention_head_restrictions(
    model: nn.Module, include_model: bool = True
) -> dict[str, Restriction]:
    """Restrictions for every attention head (and optionally the whole model).

    Args:
        model: A model as in :func:`attention_head_restriction`.
        include_model: Add the whole-model restriction under the name ``"model"`` first.

    Returns:
        Dict for :func:`~lit_emergence.llc.estimate_llc_many`: ``"model" -> None`` and
        ``"l{layer}h{head}" -> masks`` for every layer and head.

    Raises:
        ValueError: One line naming the attention module no adapter fits.

    """
    try:
        layers = attention_layers(model)
    except ValueError as error:
        raise ValueError(f"{error}; or give the heads' restrictions yourself") from None
    restrictions: dict[str, Restriction] = {WHOLE_MODEL: None} if include_model else {}
    for index, layer in enumerate(layers):
        for head in range(layer.num_heads):
            restrictions[llc_component(index, head)] = layer.head_masks(head)
    return restrictions
