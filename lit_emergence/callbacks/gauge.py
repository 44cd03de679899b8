"""GaugeInvariantMonitor: gauge-invariant observables of every attention head over training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import nn

from lit_emergence.callbacks.base import MeasurementCallback, Schedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.gauge import (
    SCALAR_OBSERVABLES,
    attention_modules,
    gauge_imbalance,
    head_invariants,
)
from lit_emergence.records.schema import GAUGE, gauge_columns, head_label


class GaugeInvariantMonitor(MeasurementCallback):
    """Log the gauge-invariant observables of every head (``docs/gauge.md``).

    At each scheduled step, for every block ``l`` and head ``h``: Frobenius and spectral norm,
    effective rank and singular values of ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O``, and the
    norms of the bias terms that reach the function (``|b_Q W_K^T|``, ``|b_V W_O|``); all are
    unchanged by the head's GL(Dh) gauge transformations. Two gauge-*dependent* diagnostics
    are added, ``qk_imbalance`` and ``ov_imbalance`` (1 = the balanced, canonical gauge; see
    :func:`~lit_emergence.gauge.gauge_imbalance`): weight decay drives them towards 1.

    Weights only: no probe data, no forward pass. The probe set of the base class is empty
    (nothing is drawn or saved). Runs under ``no_grad`` on the weights as they are; parameters,
    gradients, optimizer state, RNG and train/eval flags are untouched. DDP: the weights are
    identical on every rank after each optimizer step, so every rank computes the same values
    with no collective; global rank 0 writes and logs.

    Writes ``RUN_DIR/emergence/gauge_invariants.csv`` (step, lr_integral, layer, head, the
    scalars, the imbalances, ``qk_sv<i>`` and ``ov_sv<i>``) and logs
    ``gauge/<observable>/L<l>H<h>`` scalars (W&B gets them as one table, ``gauge/heads``, a
    column per observable: :class:`~lit_emergence.callbacks.base.WandbHeadTables`).

    Args:
        schedule: ``step -> bool`` (default :class:`~lit_emergence.callbacks.LogSchedule`, 6 per
            decade, step 0 included).
        model_fn: ``pl_module -> nn.Module`` holding the attention blocks (default: the
            LightningModule itself; a :class:`~lit_emergence.module.LearnedSimulator` or a
            module with ``.model.blocks`` works as is).
    """

    history_spec = GAUGE

    def __init__(
        self,
        schedule: Schedule | None = None,
        model_fn: Callable[[LightningModule], nn.Module] | None = None,
    ) -> None:
        # An explicit empty probe: the base class draws and saves nothing (weights only).
        super().__init__(schedule=schedule, num_probe_samples=1, probe={}, log_images=False)
        self.model_fn = model_fn

    def _model(self, pl_module: LightningModule) -> nn.Module:
        return self.model_fn(pl_module) if self.model_fn is not None else pl_module

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns (the singular values: one per head dimension)."""
        head_dim = attention_modules(self._model(pl_module))[0].head_dim
        return list(gauge_columns(SCALAR_OBSERVABLES, head_dim))

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Observables of every head from the current weights (``probe`` is empty)."""
        model = self._model(pl_module)
        rows = head_invariants(model).rows()
        qk_imbalance, ov_imbalance = gauge_imbalance(model)
        for row in rows:
            row["qk_imbalance"] = float(qk_imbalance[row["layer"], row["head"]])
            row["ov_imbalance"] = float(ov_imbalance[row["layer"], row["head"]])
        return rows

    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """Per-head scalars ``gauge/<observable>/L<l>H<h>`` (for W&B: rows of ``gauge/heads``)."""
        names = (*SCALAR_OBSERVABLES, "qk_imbalance", "ov_imbalance")
        metrics = {
            f"gauge/{name}/{head_label(row['layer'], row['head'])}": row[name]
            for row in rows
            for name in names
        }
        self.send_scalars(trainer, metrics, step)
