"""AttentionDistanceMonitor: how each head's attention depends on distance, over training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lit_emergence.callbacks.base import MeasurementCallback, Schedule, nan_to_none
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.callbacks.protocol import AttentionFn, probe_attention
from lit_emergence.callbacks.relation import Positions, batch_positions, batch_valid
from lit_emergence.metrics import ConnectedCorrelation, QueryDistance
from lit_emergence.plotting import figure_to_array, head_heatmap
from lit_emergence.records.schema import (
    DISTANCE,
    DISTANCE_OBSERVABLES,
    distance_column,
    head_label,
)

DEFAULT_R_GRID = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


class AttentionDistanceMonitor(MeasurementCallback):
    """Measure how the attention of every head depends on distance.

    Over the probe set's off-diagonal pairs of real particles ``(i, j)``, with attention
    ``A_ij`` and distance ``d_ij`` (definitions: ``docs/metrics.md``), from one forward pass:

    * ``pearson``: Pearson correlation of ``A_ij`` with ``d_ij`` over all pairs pooled
      (negative for local heads; only -0.2 to -0.6 for collision heads, whose attention is
      sparse);
    * ``G(r) = E[A_ij 1{d_ij <= r}] - E[A_ij] E[1{d_ij <= r}]``, the connected correlation
      function, on a grid of ``r`` in contact distances (``2 * radius``); ``g_contact`` is
      ``G`` at ``(1 + contact_tolerance)`` contact distances. **On a fixed probe set
      ``g_contact`` is an affine function of the collision score** (same neighbour pairs, rows
      of attention summing to 1), so it is not a second measurement;
    * observables that are not functions of the score: ``mean_distance``, the
      attention-weighted mean distance of a query to the others, averaged over queries;
      ``query_pearson`` / ``query_spearman``, the Pearson / rank correlation of attention with
      distance over each query's keys, averaged over queries; ``corr_length``, the radius
      beyond contact at which G(r) first falls to ``length_fraction`` of its contact value
      (interpolated on a grid of step ``length_step`` up to the box diagonal). Distances and
      lengths are in contact distances.

    Particles are not required: with ``positions="sequence"`` the distance between tokens
    ``i`` and ``j`` is ``|i - j|`` (a language model's locality), and any batch key or callable
    giving (B, N) 1-D positions or (B, N, D) points works. Without disc radii the unit is the
    position unit (``g_contact`` is then G at 1.25: the adjacent tokens).

    Writes ``RUN_DIR/emergence/attention_distance.csv`` (step, lr_integral, layer, head,
    pearson, g_contact, mean_distance, query_pearson, query_spearman, corr_length,
    g_r<r>...) and logs per-head scalars ``attention_distance/<column>/L<l>H<h>`` for those
    six columns, and heatmaps on ``image_schedule``.

    Args:
        r_grid: Radii of G(r) in contact distances.
        contact_tolerance: ``g_contact`` is G at ``1 + contact_tolerance`` contact distances.
        radius: Disc radius setting the contact distance (2 radius); default the probe's mean
            ``radii``, or 0.5 (unit contact distance) when the probe has none.
        length_step: Spacing, in contact distances, of the radii between contact and the
            largest distance on which ``corr_length`` is interpolated (> 0).
        length_fraction: ``corr_length`` is where G falls to this fraction of G(contact), in
            (0, 1).
        max_distance: Largest distance of the ``corr_length`` radii, in the units of the
            positions; default the diagonal of ``trainer.datamodule.simulation``'s box, else
            the largest radius of ``r_grid``.
        positions: Batch key of the (B, N, 2) centres (default), ``"sequence"`` for the token
            index, or a callable ``batch -> (B, N) | (B, N, D)`` positions.
        attention_fn: See :class:`~lit_emergence.callbacks.CollisionDetectionMonitor`.
        image_schedule: Steps at which heatmaps are logged (default: 0, 1, 10, 100, ...).
        **kwargs: Schedule and probe-set arguments of
            :class:`~lit_emergence.callbacks.base.MeasurementCallback`.
    """

    history_spec = DISTANCE

    def __init__(
        self,
        r_grid: Sequence[float] = DEFAULT_R_GRID,
        contact_tolerance: float = 0.25,
        radius: float | None = None,
        length_step: float = 0.25,
        length_fraction: float = 0.5,
        max_distance: float | None = None,
        positions: Positions = "positions",
        attention_fn: AttentionFn | None = None,
        image_schedule: Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        grid = [float(r) for r in r_grid]
        if not grid or any(r <= 0 for r in grid) or sorted(set(grid)) != grid:
            raise ValueError(f"r_grid must be positive and strictly increasing, got {list(r_grid)}")
        if contact_tolerance < 0:
            raise ValueError(f"contact_tolerance must be >= 0, got {contact_tolerance}")
        if not length_step > 0:
            raise ValueError(f"length_step must be > 0 (contact distances), got {length_step}")
        if not 0 < length_fraction < 1:
            raise ValueError(f"length_fraction must be in (0, 1), got {length_fraction}")
        if max_distance is not None and not max_distance > 0:
            raise ValueError(f"max_distance must be > 0 or None, got {max_distance}")
        self.r_grid = grid
        self.contact_tolerance = contact_tolerance
        self.radius = radius
        self.length_step = length_step
        self.length_fraction = length_fraction
        self.max_distance = max_distance
        self.positions = positions
        self.attention_fn = attention_fn
        self.image_schedule = image_schedule or LogSchedule(points_per_decade=1)
        self._heatmaps: list[Any] | None = None

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns (one per grid radius)."""
        return [*DISTANCE.columns, *(distance_column(r) for r in self.r_grid)]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the largest distance (the box diagonal) from the datamodule if not given."""
        simulation = getattr(getattr(trainer, "datamodule", None), "simulation", None)
        if self.max_distance is None and simulation is not None:
            self.max_distance = math.hypot(simulation.box_width, simulation.box_height)
        super().on_fit_start(trainer, pl_module)

    def _radius(self, probe: ProbeSet) -> float:
        """The disc radius that sets the contact distance (0.5: the position unit)."""
        if self.radius is not None:
            return self.radius
        return float(probe["radii"].float().mean()) if "radii" in probe else 0.5

    def _evaluation_radii(self, probe: ProbeSet) -> tuple[torch.Tensor, list[int], int]:
        """Sorted radii (grid, contact, length grid) in simulation units, and where each one is.

        The length grid runs from contact in steps of ``length_step`` up to ``max_distance``
        (past it G is 0); every rank builds the same one, so the sums reduce across ranks.
        """
        contact_distance = 2.0 * self._radius(probe)
        contact = 1.0 + self.contact_tolerance
        largest = max(self.r_grid[-1], contact)
        if self.max_distance is not None:
            largest = max(largest, self.max_distance / contact_distance)
        steps = math.ceil((largest - contact) / self.length_step)
        length_grid = [contact + k * self.length_step for k in range(steps + 1)]
        merged = sorted({*self.r_grid, contact, *length_grid})
        radii = torch.tensor(merged, dtype=torch.float64) * contact_distance
        return radii, [merged.index(r) for r in self.r_grid], merged.index(contact)

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Every observable of every head on this rank's shard, reduced over ranks."""
        metric: ConnectedCorrelation | None = None
        per_query: QueryDistance | None = None
        radii, grid_index, contact_index = self._evaluation_radii(probe)
        for batch in probe.batches(self.probe_batch_size):
            attention = probe_attention(pl_module, batch, self.attention_fn, step)
            if metric is None or per_query is None:
                layers, heads = attention.shape[1:3]
                metric = ConnectedCorrelation(layers, heads, radii.to(attention.device))
                metric = metric.to(attention.device)
                per_query = QueryDistance(layers, heads).to(attention.device)
            points = batch_positions(batch, self.positions, attention.shape[-1])
            valid = batch_valid(batch)
            metric.update(attention, points, valid=valid)
            per_query.update(attention, points, valid=valid)
        assert metric is not None and per_query is not None, "empty probe shard"
        # every compute below reduces over ranks: all ranks reach each of them
        connected = metric.compute().cpu()  # (L, H, radii)
        g_contact = connected[..., contact_index]
        pearson = metric.compute_pearson().cpu()  # (L, H)
        contact_distance = 2.0 * self._radius(probe)
        length = metric.compute_length(contact_index, self.length_fraction).cpu()
        queries = {key: value.cpu() for key, value in per_query.compute().items()}
        observables = dict(
            zip(
                DISTANCE_OBSERVABLES,
                (
                    queries["mean_distance"] / contact_distance,
                    queries["pearson"],
                    queries["spearman"],
                    length / contact_distance,
                ),
                strict=True,
            )
        )
        layers, heads = pearson.shape
        if self.images_due(trainer, step, self.image_schedule):
            self._heatmaps = [
                figure_to_array(
                    head_heatmap(
                        pearson.numpy(),
                        f"attention-distance Pearson r, step {step}",
                        vmin=-1.0,
                        vmax=1.0,
                        cmap="coolwarm",
                    )
                ),
                figure_to_array(
                    head_heatmap(
                        g_contact.numpy(),
                        f"G(contact) (affine in the collision score), step {step}",
                        vmin=float(g_contact.min()),
                        vmax=float(g_contact.max()) + 1e-12,
                    )
                ),
            ]
        return [
            {
                "layer": layer,
                "head": head,
                "pearson": nan_to_none(float(pearson[layer, head])),
                "g_contact": nan_to_none(float(g_contact[layer, head])),
                **{
                    key: nan_to_none(float(value[layer, head]))
                    for key, value in observables.items()
                },
                **{
                    distance_column(r): nan_to_none(float(connected[layer, head, k]))
                    for k, r in zip(grid_index, self.r_grid, strict=True)
                },
            }
            for layer in range(layers)
            for head in range(heads)
        ]

    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """Per-head scalars; heatmaps on the image schedule."""
        metrics = {}
        for row in rows:
            for key in ("pearson", "g_contact", *DISTANCE_OBSERVABLES):
                if row[key] != "":
                    label = head_label(row["layer"], row["head"])
                    metrics[f"attention_distance/{key}/{label}"] = row[key]
        self.send_scalars(trainer, metrics, step)
        if self._heatmaps is not None:
            self.send_images(
                trainer,
                "attention_distance/heatmaps",
                self._heatmaps,
                step,
                captions=[
                    "Pearson r(A, d)",
                    "G at contact distance (an affine function of the collision score)",
                ],
            )
            self._heatmaps = None
