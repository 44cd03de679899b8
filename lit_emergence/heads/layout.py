"""Where each head of an attention layer lives in the model's parameters.

An :class:`AttentionLayer` describes one attention module of a model: its number of heads,
the width of a head, and, for each of the four maps of a head (``W_Q``, ``W_K``, ``W_V``,
``W_O``), the parameter that stores it and how (a :class:`HeadMap`). From that one description
it reads every head in the maths convention (:class:`~lit_emergence.heads.weights.HeadWeights`),
writes heads back, and names each head's parameter entries (for a per-head LLC). The layouts
people use:

====================  ==================================  ===================================
storage               weight shape                        head ``h`` of an input map (Dh wide)
====================  ==================================  ===================================
``"out_in"``          ``nn.Linear``: (out, in)            rows ``offset + h Dh ...``, transposed
``"in_out"``          GPT-2 ``Conv1D``: (in, out)         columns ``offset + h Dh ...``
``"head_in_out"``     TransformerLens: (H, in, out)       ``weight[h]``
====================  ==================================  ===================================

``offset`` places a map inside a fused parameter (``in_proj_weight`` of
``nn.MultiheadAttention`` stacks Q, K, V at offsets 0, E, 2E; GPT-2's ``c_attn`` likewise along
its columns). For ``W_O`` the head's block is along the input side: columns of an
``nn.Linear`` weight, rows of a ``Conv1D`` weight, ``weight[h]`` of a (H, Dh, D) tensor.

Grouped-query attention (LLaMA-style ``num_key_value_heads < num_heads``): query head ``h``
reads key/value head ``h // (H / H_kv)``; the heads of a group share ``W_K`` and ``W_V``, so a
write must give them equal K/V maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from lit_emergence.heads.weights import HeadWeights

if TYPE_CHECKING:
    from lit_emergence.heads.registry import AttentionAdapter

__all__ = ["AttentionLayer", "HeadMap", "Rotary", "Storage"]

#: How a weight stores its heads (see the module docstring).
Storage = Literal["out_in", "in_out", "head_in_out"]
#: Rotary position embedding of queries and keys: pairs ``(i, i + Dh/2)`` ("half", LLaMA and
#: Hugging Face), adjacent pairs ``(2i, 2i + 1)`` ("adjacent"), or none.
Rotary = Literal["half", "adjacent"] | None

_STORAGES = ("out_in", "in_out", "head_in_out")


@dataclass(frozen=True)
class HeadMap:
    """Where one of a head's maps (``W_Q``, ``W_K``, ``W_V`` or ``W_O``) is stored.

    Attributes:
        weight: Path of the weight parameter inside the attention module (``"q_proj.weight"``).
        bias: Path of its bias, or None (read as zero). For ``W_O`` always None: the output
            bias is added after the heads are summed and belongs to no head.
        storage: ``"out_in"``, ``"in_out"`` or ``"head_in_out"``.
        offset: Start of this map's block along the fused dimension (0 unless fused).
        bias_offset: Start of its block in the bias, when that differs from ``offset``
            (``nn.MultiheadAttention`` with ``kdim``/``vdim``: separate weights, fused bias).

    """

    weight: str
    bias: str | None = None
    storage: Storage = "out_in"
    offset: int = 0
    bias_offset: int | None = None

    def __post_init__(self) -> None:
        if self.storage not in _STORAGES:
            raise ValueError(f"HeadMap storage={self.storage!r}; use one of {_STORAGES}")


@dataclass
class AttentionLayer:
    """One attention module of a model, with the layout of its heads.

    Attributes:
        name: Qualified name of the module inside the model it was found in (``""`` for the
            model itself); parameter names are ``f"{name}.{path}"``.
        module: The attention module.
        num_heads: H, query heads.
        head_dim: Dh, width of one head.
        query: Where ``W_Q`` (and ``b_Q``) live.
        key: Where ``W_K`` (and ``b_K``) live.
        value: Where ``W_V`` (and ``b_V``) live.
        output: Where ``W_O`` lives.
        num_kv_heads: Key/value heads (grouped-query attention); None means ``num_heads``.
        rotary: The rotary embedding applied to queries and keys, if any: then only the QK
            gauge transformations that commute with the rotations keep the function.
        adapter: The adapter that found the layer (it knows how to record its attention).

    """

    name: str
    module: nn.Module
    num_heads: int
    head_dim: int
    query: HeadMap
    key: HeadMap
    value: HeadMap
    output: HeadMap
    num_kv_heads: int | None = None
    rotary: Rotary = None
    adapter: AttentionAdapter | None = None

    def __post_init__(self) -> None:
        kv = self.kv_heads
        if self.num_heads < 1 or self.head_dim < 1 or kv < 1 or self.num_heads % kv:
            raise ValueError(
                f"attention layer {self.name or type(self.module).__name__}: num_heads="
                f"{self.num_heads}, head_dim={self.head_dim}, num_kv_heads={kv} do not form a "
                "head layout (num_heads must be a multiple of num_kv_heads)"
            )

    # ----------------------------------------------------------------------------- structure
    @property
    def kv_heads(self) -> int:
        """Key/value heads (``num_heads`` unless grouped-query attention)."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def grouped(self) -> bool:
        """Whether several query heads share one key/value head."""
        return self.kv_heads != self.num_heads

    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads."""
        return head // (self.num_heads // self.kv_heads)

    @property
    def label(self) -> str:
        """The module's qualified name, or its type for a model that is itself the layer."""
        return self.name or type(self.module).__name__

    @property
    def device(self) -> torch.device:
        """Device of the layer's query weight."""
        return self._parameter(self.query.weight).device

    def parameter_name(self, path: str) -> str:
        """Qualified name of a parameter of the layer, as ``model.named_parameters`` gives it."""
        return f"{self.name}.{path}" if self.name else path

    def _parameter(self, path: str) -> Tensor:
        try:
            return self.module.get_parameter(path)
        except AttributeError:
            raise ValueError(
                f"attention layer {self.label} ({type(self.module).__name__}) has no parameter "
                f"{path!r}; its adapter does not fit this module"
            ) from None

    # ----------------------------------------------------------------------------- indexing
    def _blocks(self, role: str, head: int) -> tuple[tuple, tuple | None, bool]:
        """Index of a head's block in the weight and bias of ``role``, and whether to transpose.

        The block read from the weight, transposed when the flag says so, is the maths map:
        (D, Dh) for Q/K/V, (Dh, D) for O.
        """
        where: HeadMap = getattr(self, role)
        dh = self.head_dim
        slot = self.kv_head(head) if role in ("key", "value") else head
        span = slice(where.offset + slot * dh, where.offset + (slot + 1) * dh)
        shift = where.offset if where.bias_offset is None else where.bias_offset
        bias_span = (slice(shift + slot * dh, shift + (slot + 1) * dh),)
        everything = slice(None)
        if where.storage == "head_in_out":
            return (slot,), (slot,), False
        if role == "output":  # the head's block lies along the input side
            if where.storage == "out_in":
                return (everything, span), None, True
            return (span, everything), None, False
        if where.storage == "out_in":
            return (span, everything), bias_span, True
        return (everything, span), bias_span, False

    def head_entries(self, head: int) -> Iterator[tuple[str, tuple]]:
        """``(parameter name, index)`` of every weight and bias entry that belongs to ``head``.

        For a grouped-query layer the key/value entries are the group's shared ones.
        """
        if not 0 <= head < self.num_heads:
            raise ValueError(f"head {head} out of range for {self.label} ({self.num_heads} heads)")
        for role in ("query", "key", "value", "output"):
            where: HeadMap = getattr(self, role)
            weight_index, bias_index, _ = self._blocks(role, head)
            yield self.parameter_name(where.weight), weight_index
            if where.bias is not None and bias_index is not None:
                yield self.parameter_name(where.bias), bias_index

    def head_masks(self, head: int) -> dict[str, Tensor]:
        """Boolean masks (one per parameter touched) of the entries that belong to ``head``."""
        masks: dict[str, Tensor] = {}
        for name, index in self.head_entries(head):
            path = name[len(self.name) + 1 :] if self.name else name
            if name not in masks:
                masks[name] = torch.zeros_like(self._parameter(path), dtype=torch.bool)
            masks[name][index] = True
        return masks

    # ----------------------------------------------------------------------------- read / write
    def _read(self, role: str, head: int) -> tuple[Tensor, Tensor | None]:
        where: HeadMap = getattr(self, role)
        weight_index, bias_index, transpose = self._blocks(role, head)
        block = self._parameter(where.weight).detach()[weight_index].to(torch.float64)
        block = block.T if transpose else block
        if where.bias is None or bias_index is None:
            return block.clone(), None
        return block.clone(), self._parameter(where.bias).detach()[bias_index].to(torch.float64)

    def read_heads(self) -> HeadWeights:
        """Every head's maps as detached float64 copies (biases absent from the model read 0)."""
        columns: dict[str, list[Tensor]] = {}
        for role in ("query", "key", "value"):
            weights, biases = [], []
            for head in range(self.num_heads):
                weight, bias = self._read(role, head)
                weights.append(weight)
                biases.append(bias if bias is not None else weight.new_zeros(weight.shape[-1]))
            columns[role] = weights
            columns[f"{role}_bias"] = biases
        columns["output"] = [self._read("output", head)[0] for head in range(self.num_heads)]
        return HeadWeights(**{name: torch.stack(value) for name, value in columns.items()})

    @torch.no_grad()
    def write_heads(self, heads: HeadWeights) -> None:
        """Write every head's maps back into the module, in each parameter's dtype.

        Args:
            heads: Maps shaped as :meth:`read_heads` returns them.

        Raises:
            ValueError: For a non-zero bias where the module has none, or, in a grouped-query
                layer, heads of one group given different key/value maps.
        """
        values = {
            "query": (heads.query, heads.query_bias),
            "key": (heads.key, heads.key_bias),
            "value": (heads.value, heads.value_bias),
            "output": (heads.output, None),
        }
        for role, (weights, biases) in values.items():
            where: HeadMap = getattr(self, role)
            weight = self._parameter(where.weight)
            bias = self._parameter(where.bias) if where.bias is not None else None
            for head in range(self.num_heads):
                if role in ("key", "value") and self.grouped:
                    first = self.kv_head(head) * (self.num_heads // self.kv_heads)
                    if head != first:
                        self._check_shared(role, weights, biases, head, first)
                        continue
                weight_index, bias_index, transpose = self._blocks(role, head)
                block = weights[head].T if transpose else weights[head]
                weight[weight_index] = block.to(weight.dtype)
                if biases is None:
                    continue
                if bias is not None and bias_index is not None:
                    bias[bias_index] = biases[head].to(bias.dtype)
                elif bool(biases[head].ne(0).any()):
                    raise ValueError(
                        f"cannot write a non-zero {role} bias into {self.label}: its "
                        "projection has no bias"
                    )

    def _check_shared(
        self, role: str, weights: Tensor, biases: Tensor | None, head: int, first: int
    ) -> None:
        same = torch.allclose(weights[head], weights[first], rtol=1e-12, atol=0.0)
        if biases is not None:
            same = same and torch.allclose(biases[head], biases[first], rtol=1e-12, atol=0.0)
        if not same:
            raise ValueError(
                f"{self.label}: heads {first} and {head} share one {role} head (grouped-query "
                "attention) but were given different maps; transform a group's heads alike"
            )
