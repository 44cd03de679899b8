"""AttentionDistanceMonitor: how each head's attention depends on distance, over training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lit_emergence.callbacks.base import MeasurementCallback, Schedule, nan_to_none
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.callbacks.protocol import AttentionFn, probe_attention
from lit_emergence.metrics import ConnectedCorrelation
from lit_emergence.plotting import figure_to_array, head_heatmap
from lit_emergence.records.schema import DISTANCE, distance_column, head_label

DEFAULT_R_GRID = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


class AttentionDistanceMonitor(MeasurementCallback):
    """Measure the attention-distance correlation of every head.

    Over the probe set's off-diagonal pairs of real particles ``(i, j)``, with attention
    ``A_ij`` and distance ``d_ij``:

    * ``pearson``: Pearson correlation of ``A_ij`` with ``d_ij`` (negative for local heads;
      only -0.2 to -0.6 for collision heads, whose attention is sparse);
    * ``G(r) = E[A_ij 1{d_ij <= r}] - E[A_ij] E[1{d_ij <= r}]``, the connected correlation
      function, on a grid of ``r`` in contact distances (``2 * radius``); ``g_contact`` is
      ``G`` at ``(1 + contact_tolerance)`` contact distances, the sharpest single number.

    Writes ``RUN_DIR/emergence/attention_distance.csv`` (step, lr_integral, layer, head,
    pearson, g_contact, g_r<r>...) and logs per-head scalars
    ``attention_distance/{pearson,g_contact}/L<l>H<h>``, and heatmaps on ``image_schedule``.

    Args:
        r_grid: Radii of G(r) in contact distances.
        contact_tolerance: ``g_contact`` is G at ``1 + contact_tolerance`` contact distances.
        radius: Disc radius setting the contact distance; default the probe's mean radius.
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
        self.r_grid = grid
        self.contact_tolerance = contact_tolerance
        self.radius = radius
        self.attention_fn = attention_fn
        self.image_schedule = image_schedule or LogSchedule(points_per_decade=1)
        self._heatmaps: list[Any] | None = None

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns (one per grid radius)."""
        return [*DISTANCE.columns, *(distance_column(r) for r in self.r_grid)]

    def _evaluation_radii(self, probe: ProbeSet) -> tuple[torch.Tensor, list[int], int]:
        """Sorted radii (grid and contact point) in simulation units, and where each one is."""
        radius = self.radius if self.radius is not None else float(probe["radii"].float().mean())
        contact = 1.0 + self.contact_tolerance
        merged = sorted({*self.r_grid, contact})
        radii = torch.tensor(merged, dtype=torch.float64) * 2.0 * radius
        return radii, [merged.index(r) for r in self.r_grid], merged.index(contact)

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Pearson r and G(r) of every head on this rank's shard, reduced over ranks."""
        metric: ConnectedCorrelation | None = None
        radii, grid_index, contact_index = self._evaluation_radii(probe)
        for batch in probe.batches(self.probe_batch_size):
            attention = probe_attention(pl_module, batch, self.attention_fn, step)
            if metric is None:
                layers, heads = attention.shape[1:3]
                metric = ConnectedCorrelation(layers, heads, radii.to(attention.device))
                metric = metric.to(attention.device)
            metric.update(attention, batch["positions"], valid=batch.get("valid"))
        assert metric is not None, "empty probe shard"
        connected = metric.compute().cpu()  # (L, H, radii), synced over ranks
        g_contact = connected[..., contact_index]
        pearson = metric.compute_pearson().cpu()  # (L, H)
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
                        f"G(contact), step {step}",
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
            for key in ("pearson", "g_contact"):
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
                captions=["Pearson r(A, d)", "G at contact distance"],
            )
            self._heatmaps = None
