"""RelationScoreMonitor: each head's share of attention on relations between tokens.

A relation says, for every sample of a probe batch, which keys are related to each query: a
(B, N, N) bool mask (and optionally which queries count). The monitor measures, for every head,
the mean attention mass a query puts on its related keys (the *relation score*; see
:func:`lit_emergence.functional.relation_score`), for as many relations as you name. Contact
between particles is one relation: :class:`~lit_emergence.callbacks.CollisionDetectionMonitor`
is this monitor with the contact relations built in.

Relations are given as :class:`Relation` objects, or as shorthands:

* ``"previous_token"``: key ``i - 1`` of query ``i`` (:class:`PreviousToken`);
* any other string: a (B, N, N) bool tensor stored in the probe batch under that key
  (:class:`BatchRelation`);
* a callable ``(batch, num_tokens) -> (B, N, N) bool`` (:class:`CallableRelation`).

Positions (for :class:`WithinRadius` and the distance monitor) are named the same way: a batch
key holding (B, N, D) points or (B, N) 1-D positions, ``"sequence"`` for the token index
(distance ``|i - j|`` between tokens), or a callable ``batch -> positions``.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from lit_emergence.callbacks.base import MeasurementCallback, nan_to_none
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.callbacks.protocol import AttentionFn, probe_attention
from lit_emergence.functional import (
    neighbour_mask,
    previous_token_mask,
    same_group_mask,
    within_radius_mask,
)
from lit_emergence.metrics import RelationScore
from lit_emergence.records.schema import RELATION, head_label

#: Token order as positions: the position of token ``i`` is ``i``.
SEQUENCE = "sequence"
#: A batch key, :data:`SEQUENCE`, or ``batch -> (B, N) | (B, N, D)`` positions.
Positions = str | Callable[[Mapping[str, Tensor]], Tensor]
#: Related keys (B, N, N) and, optionally, the queries that count (B, N).
RelationMask = tuple[Tensor, Tensor | None]

__all__ = [
    "SEQUENCE",
    "BatchRelation",
    "CallableRelation",
    "Contact",
    "PreviousToken",
    "Relation",
    "RelationScoreMonitor",
    "SameGroup",
    "WithinRadius",
    "as_relation",
    "batch_positions",
    "batch_valid",
]


def batch_positions(batch: Mapping[str, Tensor], positions: Positions, num_tokens: int) -> Tensor:
    """The positions of a probe batch's tokens, as a floating tensor.

    Args:
        batch: A probe batch (dict of tensors with a leading sample dimension).
        positions: A batch key, :data:`SEQUENCE` (token ``i`` at position ``i``) or a callable
            ``batch -> positions``.
        num_tokens: Tokens per sample N (the attention's last dimension).

    Returns:
        (B, N) 1-D positions or (B, N, D) points, floating.

    Raises:
        ValueError: When the key is missing or the result is not (B, N) / (B, N, D).

    """
    if callable(positions):
        value = positions(batch)
    elif positions == SEQUENCE:
        size = next(iter(batch.values())).shape[0]
        value = torch.arange(num_tokens, dtype=torch.float64).expand(size, num_tokens)
    elif positions in batch:
        value = batch[positions]
    else:
        raise ValueError(
            f"the probe batch has no {positions!r} key (it has {sorted(batch)}); pass "
            f"positions='{SEQUENCE}' for token order or a callable batch -> positions"
        )
    if not isinstance(value, Tensor) or value.ndim not in (2, 3) or value.shape[1] != num_tokens:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"positions must be (B, {num_tokens}) or (B, {num_tokens}, D), got {shape}"
        )
    return value if value.is_floating_point() else value.to(torch.float64)


def batch_valid(batch: Mapping[str, Tensor]) -> Tensor | None:
    """Real tokens of a probe batch: ``valid``, else ``attention_mask`` != 0, else None.

    ``valid`` is the (B, N) bool of :class:`~lit_emergence.data.ParticleDataModule` batches;
    a Hugging Face ``attention_mask`` is 1 on real tokens and 0 on padding.
    """
    if "valid" in batch:
        return batch["valid"]
    mask = batch.get("attention_mask")
    return mask.bool() if isinstance(mask, Tensor) and mask.ndim == 2 else None


class Relation:
    """Which keys are related to each query, for every sample of a probe batch.

    Subclasses set :attr:`requires` (batch keys they read) and implement :meth:`mask`.
    """

    #: Keys the probe batch must hold.
    requires: tuple[str, ...] = ()

    def missing(self, batch: Mapping[str, Tensor]) -> str | None:
        """Why this relation cannot be measured on ``batch``, or None when it can."""
        lacking = [key for key in self.requires if key not in batch]
        return f"the probe lacks {lacking}" if lacking else None

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """Related keys (B, N, N) bool and the counted queries (B, N) bool or None."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "requires")
        return f"{type(self).__name__}({fields})"


class BatchRelation(Relation):
    """A relation stored in the probe batch: ``batch[key]`` is (B, N, N) bool.

    Args:
        key: Batch key of the relation mask.
        query_key: Optional batch key of a (B, N) bool mask of the queries that count.
    """

    def __init__(self, key: str, query_key: str | None = None) -> None:
        self.key, self.query_key = key, query_key
        self.requires = (key,) if query_key is None else (key, query_key)

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """``batch[key]`` and ``batch[query_key]``."""
        return batch[self.key], None if self.query_key is None else batch[self.query_key]


class CallableRelation(Relation):
    """A relation computed by ``function(batch, num_tokens) -> (B, N, N) bool``."""

    def __init__(self, function: Callable[[Mapping[str, Tensor], int], Tensor]) -> None:
        self.function = function

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """The function's mask; every query with a related key counts."""
        return self.function(batch, num_tokens), None


class PreviousToken(Relation):
    """Key ``i - offset`` of query ``i`` (the previous-token head of language models).

    Args:
        offset: How far back, >= 1.
    """

    def __init__(self, offset: int = 1) -> None:
        previous_token_mask(0, 0, offset)  # checks the offset now, not at the first probe
        self.offset = offset

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """The shifted diagonal, for every sample of the batch."""
        size = next(iter(batch.values())).shape[0]
        device = next(iter(batch.values())).device
        return previous_token_mask(size, num_tokens, self.offset, device), None


class WithinRadius(Relation):
    """Keys within distance ``radius`` of the query (1-D token positions included).

    Args:
        radius: Largest distance of a related key, > 0, in the units of the positions.
        positions: A batch key, ``"sequence"`` (token index) or ``batch -> positions``.
    """

    def __init__(self, radius: float, positions: Positions = "positions") -> None:
        if not (isinstance(radius, int | float) and 0 < radius < float("inf")):
            raise ValueError(f"WithinRadius: radius={radius!r} must be a finite number > 0")
        self.radius, self.positions = float(radius), positions
        self.requires = (positions,) if isinstance(positions, str) and positions != SEQUENCE else ()

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """Pairs no farther apart than ``radius``."""
        points = batch_positions(batch, self.positions, num_tokens)
        return within_radius_mask(points, self.radius, batch_valid(batch)), None


class SameGroup(Relation):
    """Keys with the query's label, ``batch[key]`` (B, N) integers (same object, sentence).

    Args:
        key: Batch key of the labels.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.requires = (key,)

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """Pairs with equal labels."""
        return same_group_mask(batch[self.key], batch_valid(batch)), None


class Contact(Relation):
    """Discs within ``(R_i + R_j)(1 + tolerance)`` of each other at the input frame.

    Args:
        tolerance: Relative slack on the contact distance, >= 0.
    """

    requires = ("positions", "radii")

    def __init__(self, tolerance: float = 0.25) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = tolerance

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """The neighbour mask of the batch's discs."""
        valid = batch_valid(batch)
        return neighbour_mask(batch["positions"], batch["radii"], self.tolerance, valid), None


def as_relation(spec: Relation | str | Callable[[Mapping[str, Tensor], int], Tensor]) -> Relation:
    """A :class:`Relation` from a relation or its shorthand (see the module docstring)."""
    if isinstance(spec, Relation):
        return spec
    if isinstance(spec, str):
        return PreviousToken() if spec == "previous_token" else BatchRelation(spec)
    if callable(spec):
        return CallableRelation(spec)
    raise TypeError(
        f"a relation must be a Relation, a batch key or a callable (batch, num_tokens) -> "
        f"(B, N, N) bool mask, got {type(spec).__name__}"
    )


class RelationScoreMonitor(MeasurementCallback):
    """Measure every head's share of attention on each of several relations.

    For every head (layer ``l``, head ``h``) and relation ``R``, the score is the mean over the
    queries ``i`` with at least one related key of ``sum_j A_ij R_ij``: 1 when all of a query's
    attention is on its related keys, about ``#related / (N - 1)`` for a uniform head. The
    scores are sums reduced across DDP ranks, so they equal the single-process ones.

    Writes ``RUN_DIR/emergence/relation_scores.csv`` (step, lr_integral, layer, head, then one
    column per relation) and logs ``relation/<name>/L<l>H<h>``.

    Example (a language model; zero adapter code for Hugging Face or PyTorch attention)::

        RelationScoreMonitor(relations={
            "previous_token": "previous_token",
            "nearby": WithinRadius(3, positions="sequence"),
            "same_sentence": SameGroup("sentence_id"),
        })

    Args:
        relations: Name (a Python identifier; the column) to relation or shorthand.
        attention_fn: ``(pl_module, batch) -> (B, L, H, N, N)``; by default the attention is
            recorded from the model's attention layers (:mod:`lit_emergence.heads`).
        **kwargs: Schedule and probe-set arguments of
            :class:`~lit_emergence.callbacks.base.MeasurementCallback`.

    Raises:
        ValueError: For no relations or a name that is not an identifier or is reserved.
    """

    history_spec = RELATION
    #: First part of the logged metric names.
    log_prefix = "relation"

    def __init__(
        self,
        relations: Mapping[str, Relation | str | Callable[[Mapping[str, Tensor], int], Tensor]],
        attention_fn: AttentionFn | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(relations, Mapping) or not relations:
            raise ValueError(
                "relations must be a non-empty mapping name -> relation, e.g. "
                "{'previous_token': 'previous_token'}"
            )
        reserved = set(RELATION.columns)
        for name in relations:
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"relation name {name!r} must be a Python identifier (a column)")
            if name in reserved:
                raise ValueError(f"relation name {name!r} is a reserved column {sorted(reserved)}")
        self.relations = {name: as_relation(spec) for name, spec in relations.items()}
        self.attention_fn = attention_fn
        self._warned: set[str] = set()

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns: the head keys, then one per relation."""
        return [*self.spec.columns, *self.relations]

    def can_measure(self, name: str, batch: Mapping[str, Tensor]) -> bool:
        """Whether relation ``name`` can be measured on ``batch``; warns once when not."""
        reason = self.relations[name].missing(batch)
        if reason is not None and name not in self._warned:
            self._warned.add(name)
            rank_zero_warn(f"{type(self).__name__}: no '{name}' score, {reason}")
        return reason is None

    def new_metrics(
        self, layers: int, heads: int, batch: Mapping[str, Tensor], device: torch.device
    ) -> dict[str, Metric]:
        """One score metric per relation (built at the first probe batch)."""
        return {name: RelationScore(layers, heads).to(device) for name in self.relations}

    def update_metrics(
        self, metrics: dict[str, Metric], attention: Tensor, batch: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Add one probe batch to every measurable relation; return their (B, N, N) masks."""
        masks = {}
        valid = batch_valid(batch)
        for name, relation in self.relations.items():
            if self.can_measure(name, batch):
                pairs, queries = relation.mask(batch, attention.shape[-1])
                metrics[name].update(attention, pairs.to(attention.device), queries, valid=valid)
                masks[name] = pairs
        return masks

    def score_relations(
        self, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> dict[str, Tensor]:
        """Every metric's (L, H) (or (L, H, K)) scores on the probe set, reduced over ranks."""
        metrics: dict[str, Metric] = {}
        for batch in probe.batches(self.probe_batch_size):
            attention = probe_attention(pl_module, batch, self.attention_fn, step)
            if not metrics:
                layers, heads = attention.shape[1:3]
                metrics = self.new_metrics(layers, heads, batch, attention.device)
            self.update_metrics(metrics, attention, batch)
        # compute() reduces the sums over ranks: every rank gets here for every metric, also
        # for relations no batch could measure (their count is 0 everywhere: NaN).
        return {name: metric.compute().cpu() for name, metric in metrics.items()}

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Scores of every head for every relation, one row per head."""
        scores = self.score_relations(pl_module, probe, step)
        layers, heads = next(iter(scores.values())).shape[:2]
        return [
            {
                "layer": layer,
                "head": head,
                **{name: nan_to_none(float(scores[name][layer, head])) for name in self.relations},
            }
            for layer in range(layers)
            for head in range(heads)
        ]

    def head_scalars(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, float]:
        """``<log_prefix>/<column>/L<l>H<h>`` for every measured value of ``columns``."""
        return {
            f"{self.log_prefix}/{column}/{head_label(row['layer'], row['head'])}": row[column]
            for row in rows
            for column in columns
            if row[column] not in ("", None)
        }

    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """Per-head scalars of every relation."""
        self.send_scalars(trainer, self.head_scalars(rows, list(self.relations)), step)
