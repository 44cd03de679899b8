"""CollisionDetectionMonitor: per-head collision-detection scores over training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from lit_emergence.callbacks.base import Schedule, nan_to_none
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.callbacks.protocol import AttentionFn, probe_attention
from lit_emergence.callbacks.relation import (
    BatchRelation,
    Contact,
    Relation,
    RelationMask,
    RelationScoreMonitor,
)
from lit_emergence.functional import classify_heads, head_class_names, impact_queries
from lit_emergence.metrics import BandCollisionScore
from lit_emergence.plotting import (
    AttentionPanel,
    attention_panels,
    figure_to_array,
    head_heatmap,
)
from lit_emergence.records.schema import (
    COLLISION,
    COLLISION_VARIANTS,
    DEFAULT_PARTIAL_THRESHOLD,
    DEFAULT_TRUE_THRESHOLD,
    band_column,
    head_label,
)


class Impact(Relation):
    """Ground-truth contacts, counted over the queries that were hit.

    A query counts when its velocity change departs from free fall
    (:func:`~lit_emergence.functional.impact_queries`).

    Args:
        threshold: Departure, in units of ``gravity * frame_interval``, above which a query
            counts.
        gravity: Gravitational acceleration; None until known (then not measurable).
        frame_interval: Time between frames; None until known.
    """

    requires = ("contacts", "velocity_change")

    def __init__(
        self,
        threshold: float = 0.5,
        gravity: float | None = None,
        frame_interval: float | None = None,
    ) -> None:
        self.threshold, self.gravity, self.frame_interval = threshold, gravity, frame_interval

    def missing(self, batch: Mapping[str, Tensor]) -> str | None:
        """Also not measurable without gravity and frame interval, or with gravity 0."""
        lacking = [key for key in self.requires if key not in batch]
        if self.gravity is None or self.frame_interval is None:
            lacking.append("gravity/frame_interval")
        if lacking:
            return f"the probe lacks {lacking}"
        if self.gravity == 0:
            # Impacts are departures from free fall measured in units of g * dt: no gravity,
            # no scale. The column stays empty; the other variants are unaffected.
            return "gravity is 0, and impacts are measured against free fall (g * dt)"
        return None

    def mask(self, batch: Mapping[str, Tensor], num_tokens: int) -> RelationMask:
        """The contacts, and the particles hit during the interval as queries."""
        assert self.gravity is not None and self.frame_interval is not None  # missing() checked
        contacts = batch["contacts"]
        hit = impact_queries(
            batch["velocity_change"],
            self.frame_interval,
            self.gravity,
            contacts,
            threshold=self.threshold,
            valid=batch.get("valid"),
        )
        return contacts, hit


class CollisionDetectionMonitor(RelationScoreMonitor):
    """Measure how much of each head's attention lands on a query's collision partners.

    For every head (layer ``l``, head ``h``) three variants of the score (see
    ``docs/metrics.md``), each the mean over qualifying queries ``i`` of the attention mass
    ``m_i = sum_j A_ij`` on ``i``'s partners:

    * ``score`` (default definition): partners = other discs within
      ``(R_i + R_j) * (1 + tolerance)``; queries = discs with at least one such neighbour.
    * ``strict``: partners = the ground-truth contact set of the predicted interval.
    * ``impact``: as ``strict``, over queries whose velocity change departs from free fall.

    Each variant is a relation score (:class:`~lit_emergence.callbacks.RelationScoreMonitor`)
    of a contact relation.

    1 means all of a query's attention is on its partners; a uniform head scores about
    ``#partners / (N - 1)``. Heads are classed ``true`` (score >= ``true_threshold``),
    ``partial`` (>= ``partial_threshold``) or ``none``.

    The ``score`` is also resolved by height: ``score_band<k>`` is the score over the queries
    whose centre lies in band ``k`` of ``num_bands`` equal bands over the box height (band 0
    at the floor); a band without a counted query is empty. The count-weighted mean of the
    band scores is the score.

    Writes ``RUN_DIR/emergence/collision_scores.csv`` (step, lr_integral, layer, head, score,
    strict, impact, head_class, score_band0 ... score_band<K-1>) and logs per-head scalars
    ``collision/<variant>/L<l>H<h>`` and ``collision/score_band<k>/L<l>H<h>``, a summary
    (``collision/best_score``, ``collision/num_true``, ``collision/num_partial``), and on
    ``image_schedule`` a [layer x head] heatmap and the attention of the most and least
    collision-like heads drawn on particles in free fall and in the settled pile (W&B only).

    Args:
        tolerance: Relative slack on the contact distance for the ``score`` neighbours. The
            default 0.25 (a quarter diameter for equal discs) is about the distance two discs
            close in one frame interval at typical impact speeds in the default system.
        true_threshold: Score at or above which a head is a true collision head.
        partial_threshold: Score at or above which a head is a partial collision head.
        impact_threshold: Departure from free fall, in units of ``gravity * frame_interval``
            (with ``gravity`` 0 there is no such unit: the impact score is off, with a warning),
            above which a query counts as hit (``impact`` variant).
        gravity: Gravitational acceleration; default from ``trainer.datamodule.simulation``.
        frame_interval: Time between frames; default from ``trainer.datamodule.simulation``.
        num_bands: Number of equal bands of query height for the ``score_band<k>`` columns
            (>= 0; 0 writes none).
        box_height: Height of the box (floor at ``y = 0``) the bands divide; default from
            ``trainer.datamodule.simulation``. Without either, the band columns stay empty
            (with a warning).
        attention_fn: ``(pl_module, batch) -> (B, L, H, N, N)``; default
            ``pl_module.probe_attention(batch)`` if the module has one, else the attention
            recorded from its layers (:mod:`lit_emergence.heads`).
        image_schedule: Steps at which figures are logged (default: 0, 1, 10, 100, ...).
        **kwargs: Schedule and probe-set arguments of
            :class:`~lit_emergence.callbacks.base.MeasurementCallback`.
    """

    history_spec = COLLISION
    log_prefix = "collision"

    def __init__(
        self,
        tolerance: float = 0.25,
        true_threshold: float = DEFAULT_TRUE_THRESHOLD,
        partial_threshold: float = DEFAULT_PARTIAL_THRESHOLD,
        impact_threshold: float = 0.5,
        gravity: float | None = None,
        frame_interval: float | None = None,
        num_bands: int = 4,
        box_height: float | None = None,
        attention_fn: AttentionFn | None = None,
        image_schedule: Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_bands, int) or num_bands < 0:
            raise ValueError(f"num_bands must be an integer >= 0 (0: no bands), got {num_bands!r}")
        if box_height is not None and not box_height > 0:
            raise ValueError(f"box_height must be > 0 or None, got {box_height}")
        if not 0 < partial_threshold <= true_threshold <= 1:
            raise ValueError(
                "need 0 < partial_threshold <= true_threshold <= 1, got "
                f"partial_threshold={partial_threshold}, true_threshold={true_threshold}"
            )
        relations = {
            "score": Contact(tolerance),
            "strict": BatchRelation("contacts"),
            "impact": Impact(impact_threshold, gravity, frame_interval),
        }
        super().__init__(relations, attention_fn=attention_fn, **kwargs)
        self.tolerance = tolerance
        self.true_threshold = true_threshold
        self.partial_threshold = partial_threshold
        self.impact_threshold = impact_threshold
        self.gravity = gravity
        self.frame_interval = frame_interval
        self.num_bands = num_bands
        self.box_height = box_height
        self.image_schedule = image_schedule or LogSchedule(points_per_decade=1)
        self._figure: Any = None
        # (width, height) of the box the pictures draw, from the datamodule's simulation.
        self._box: tuple[float, float] | None = None

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns: the fixed ones, then one per height band."""
        return [*COLLISION.columns, *(band_column(k) for k in range(self.num_bands))]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take gravity, frame interval and box from the datamodule's simulation if not given."""
        simulation = getattr(getattr(trainer, "datamodule", None), "simulation", None)
        if self.gravity is None and simulation is not None:
            self.gravity = float(simulation.gravity)
        if self.frame_interval is None and simulation is not None:
            self.frame_interval = float(simulation.frame_interval)
        if simulation is not None:
            self._box = (float(simulation.box_width), float(simulation.box_height))
        if self.box_height is None and simulation is not None:
            self.box_height = float(simulation.box_height)
        impact = self.relations["impact"]
        assert isinstance(impact, Impact)
        impact.gravity, impact.frame_interval = self.gravity, self.frame_interval
        super().on_fit_start(trainer, pl_module)

    # ----------------------------------------------------------------------------- measuring
    def _bands_measurable(self, batch: Mapping[str, Tensor]) -> bool:
        """Whether the height bands can be measured; warns once when they cannot."""
        if self.num_bands == 0:
            return False
        missing = [key for key in Contact.requires if key not in batch]
        if self.box_height is None:
            missing.append("box_height (pass box_height= or use a datamodule with .simulation)")
        if missing and "bands" not in self._warned:
            self._warned.add("bands")
            rank_zero_warn(f"{type(self).__name__}: no 'bands' score, the probe lacks {missing}")
        return not missing

    def new_metrics(
        self, layers: int, heads: int, batch: Mapping[str, Tensor], device: torch.device
    ) -> dict[str, Metric]:
        """A collision score per variant, and the band scores when they can be measured."""
        metrics = super().new_metrics(layers, heads, batch, device)  # one per variant
        if self._bands_measurable(batch):
            height = float(self.box_height)  # known: _bands_measurable checked it
            metrics["bands"] = BandCollisionScore(layers, heads, height, self.num_bands).to(device)
        return metrics

    def update_metrics(
        self, metrics: dict[str, Metric], attention: Tensor, batch: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Add the batch to each variant; the bands split the ``score`` variant's queries."""
        masks = super().update_metrics(metrics, attention, batch)
        if "bands" in metrics and "score" in masks:
            valid = batch.get("valid")
            metrics["bands"].update(attention, masks["score"], batch["positions"], valid=valid)
        return masks

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Scores of every head on this rank's probe shard, reduced over ranks."""
        scores = self.score_relations(pl_module, probe, step)
        if self.images_due(trainer, step, self.image_schedule):
            self._figure = self._attention_figure(pl_module, probe, scores["score"], step)
        classes = head_class_names(
            classify_heads(scores["score"], self.true_threshold, self.partial_threshold)
        )
        layers, heads = scores["score"].shape
        return [
            {
                "layer": layer,
                "head": head,
                **{v: nan_to_none(float(scores[v][layer, head])) for v in COLLISION_VARIANTS},
                "head_class": classes[layer][head],
                **{
                    band_column(k): nan_to_none(float(scores["bands"][layer, head, k]))
                    if "bands" in scores
                    else ""
                    for k in range(self.num_bands)
                },
            }
            for layer in range(layers)
            for head in range(heads)
        ]

    # ----------------------------------------------------------------------------- logging
    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """Per-head scalars and a summary; figures on the image schedule."""
        columns = [*COLLISION_VARIANTS, *(band_column(k) for k in range(self.num_bands))]
        metrics = self.head_scalars(rows, columns)
        scores = [row["score"] for row in rows if row["score"] != ""]
        if scores:
            metrics["collision/best_score"] = max(scores)
        metrics["collision/num_true"] = sum(row["head_class"] == "true" for row in rows)
        metrics["collision/num_partial"] = sum(row["head_class"] == "partial" for row in rows)
        self.send_scalars(trainer, metrics, step)
        if self._figure is not None:
            heatmap, panels = self._figure
            self.send_images(trainer, "collision/heatmap", [heatmap], step)
            if panels is not None:
                self.send_images(trainer, "collision/attention_on_particles", [panels], step)
            self._figure = None

    def _attention_figure(
        self, pl_module: LightningModule, probe: ProbeSet, scores: Tensor, step: int
    ) -> tuple[Any, Any]:
        heatmap = figure_to_array(
            head_heatmap(scores.numpy(), f"collision-detection score, step {step}")
        )
        if "frame" not in probe or probe.num_samples == 0:
            return heatmap, None
        # The earliest (free fall) and latest (settled pile) probe samples.
        frames = probe["frame"]
        picks = torch.stack([frames.argmin(), frames.argmax()])
        batch = {k: v[picks] for k, v in probe.tensors.items()}
        attention = probe_attention(pl_module, batch, self.attention_fn).float().cpu()
        flat = torch.nan_to_num(scores, nan=-1.0).flatten()
        best, worst = int(flat.argmax()), int(torch.nan_to_num(scores, nan=2.0).flatten().argmin())
        heads = scores.shape[1]
        panels = []
        for index, label in ((best, "most"), (worst, "least")):
            layer, head = divmod(index, heads)
            for sample, state in ((0, "free fall"), (1, "settled")):
                panels.append(
                    AttentionPanel(
                        positions=batch["positions"][sample].float().cpu().numpy(),
                        radii=batch["radii"][sample].float().cpu().numpy(),
                        attention=attention[sample, layer, head].numpy(),
                        contacts=batch["contacts"][sample].cpu().numpy()
                        if "contacts" in batch
                        else None,
                        title=f"{head_label(layer, head)}, {label} collision-like\n"
                        f"(score {float(scores[layer, head]):.2f}), {state}",
                    )
                )
        box = self._box or self._bounding_box(batch)
        figure = attention_panels(
            panels, box, columns=2, title=f"attention on particles, step {step}"
        )
        return heatmap, figure_to_array(figure)

    @staticmethod
    def _bounding_box(batch: Mapping[str, Tensor]) -> tuple[float, float]:
        """The box of a datamodule without simulation settings: what the discs reach."""
        upper = (batch["positions"] + batch["radii"].unsqueeze(-1)).amax(dim=(0, 1))
        return float(upper[0]), float(upper[1])
