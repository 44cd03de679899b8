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
weight-refined restriction of one attention head of a
:class:`~lit_emergence.model.ParticleTransformer` (or any model whose blocks expose
``attn.q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and ``attn.head_slice``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lit_emergence.model import block_attentions
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

    Head ``h`` of block ``layer`` owns rows ``h*Dh:(h+1)*Dh`` of the ``q_proj``, ``k_proj``
    and ``v_proj`` weights and the same entries of their biases, and columns
    ``h*Dh:(h+1)*Dh`` of ``out_proj.weight``. ``out_proj.bias`` is added after the heads are
    summed, so it belongs to no head and is not sampled. The head has ``4 * Dh * D + 3 * Dh``
    sampled coordinates (D the model width, Dh the head width).

    Args:
        model: A model with ``model.blocks[layer].attn`` exposing ``q_proj``, ``k_proj``,
            ``v_proj``, ``out_proj`` (``nn.Linear``) and ``head_slice(head)``, e.g. a
            :class:`~lit_emergence.model.ParticleTransformer`.
        layer: Block index.
        head: Head index within the block.

    Returns:
        Dict ``parameter name -> bool mask`` for :func:`~lit_emergence.llc.estimate_llc`'s
        ``restrict`` argument.

    Raises:
        ValueError: If the model has no such block or head.

    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not 0 <= layer < len(blocks):
        count = 0 if blocks is None else len(blocks)
        raise ValueError(f"layer={layer} is out of range; the model has {count} blocks")
    attn = block_attentions(model)[layer]
    if not 0 <= head < attn.n_heads:
        raise ValueError(f"head={head} is out of range; block {layer} has {attn.n_heads} heads")
    prefix = next(name for name, module in model.named_modules() if module is attn)
    rows = attn.head_slice(head)

    masks: dict[str, Tensor] = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        linear: nn.Linear = getattr(attn, proj)
        weight = torch.zeros_like(linear.weight, dtype=torch.bool)
        weight[rows, :] = True  # output rows of this head
        masks[f"{prefix}.{proj}.weight"] = weight
        if linear.bias is not None:
            bias = torch.zeros_like(linear.bias, dtype=torch.bool)
            bias[rows] = True
            masks[f"{prefix}.{proj}.bias"] = bias
    out_weight = torch.zeros_like(attn.out_proj.weight, dtype=torch.bool)
    out_weight[:, rows] = True  # input columns fed by this head
    masks[f"{prefix}.out_proj.weight"] = out_weight
    return masks


def attention_head_restrictions(
    model: nn.Module, include_model: bool = True
) -> dict[str, Restriction]:
    """Restrictions for every attention head (and optionally the whole model).

    Args:
        model: A model as in :func:`attention_head_restriction`.
        include_model: Add the whole-model restriction under the name ``"model"`` first.

    Returns:
        Dict for :func:`~lit_emergence.llc.estimate_llc_many`: ``"model" -> None`` and
        ``"l{layer}h{head}" -> masks`` for every block and head.

    """
    try:
        attentions = block_attentions(model)
    except ValueError as error:
        raise ValueError(f"{error}; give the heads' restrictions yourself") from None
    restrictions: dict[str, Restriction] = {WHOLE_MODEL: None} if include_model else {}
    for layer, attn in enumerate(attentions):
        for head in range(attn.n_heads):
            name = llc_component(layer, head)
            restrictions[name] = attention_head_restriction(model, layer, head)
    return restrictions
