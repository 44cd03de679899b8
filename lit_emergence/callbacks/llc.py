"""LLCMonitor: local learning coefficient of the whole model and of every head, over training."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lit_emergence.callbacks.base import MeasurementCallback, Schedule, nan_to_none
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.llc import LLCResult, Restriction, attention_head_restrictions, estimate_llc_many
from lit_emergence.llc.settings import DEFAULT_LOCALIZATION, check_sampling_settings
from lit_emergence.plotting import figure_to_array, loss_traces
from lit_emergence.records.schema import LLC, WHOLE_MODEL, llc_component

LossFn = Callable[[Tensor, Mapping[str, Tensor]], Tensor]
InputsFn = Callable[[Mapping[str, Tensor]], tuple]


def _mse_to_target(outputs: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    return F.mse_loss(outputs, batch["target"])


def _features(batch: Mapping[str, Tensor]) -> tuple:
    # A ParticleDataModule batch, or an (inputs, target) pair as the probe set names it.
    return (batch["features"] if "features" in batch else batch["inputs"],)


def _default_model(pl_module: LightningModule) -> nn.Module:
    return getattr(pl_module, "model", pl_module)


def _training_set_size(trainer: Trainer) -> int | None:
    """Number of training samples: the length of the training dataloader's dataset."""
    loader = trainer.train_dataloader
    if isinstance(loader, Mapping):
        loader = next(iter(loader.values()), None)
    elif isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _default_restrictions(model: nn.Module, per_head: bool) -> dict[str, Restriction]:
    if not per_head:
        return {WHOLE_MODEL: None}
    try:  # never a silent fall-back to the whole model
        return attention_head_restrictions(model, include_model=True)
    except ValueError as error:
        raise ValueError(f"LLCMonitor(per_head=True): {error}, or set per_head=false") from None


class LLCMonitor(MeasurementCallback):
    """Estimate the LLC of the whole model and (weight-refined) of every attention head.

    At each scheduled step, SGLD chains sample the localised tempered posterior around the
    current weights ``w*`` on fixed training minibatches, all components and chains in one
    vectorised call (:func:`lit_emergence.llc.estimate_llc_many`), on copies of the weights:
    parameters, optimizer state, RNG and train/eval flags are untouched. Under DDP the
    components are split across ranks (round robin) and the results gathered, so no rank waits
    idle while another samples.

    Writes ``RUN_DIR/emergence/llc.csv``: one row per step and component (``model``,
    ``l<layer>h<head>``) with the mean and std over chains, every chain's estimate
    (``;``-separated), the diagnostics (diverged chains, ``trace_rise``, ``still_climbing``,
    MALA ``acceptance``, the estimate at ``localization / localization_check`` and the
    ``localization_shift``), the ``verdict`` (``ok`` / ``localisation-dominated`` /
    ``not-converged`` / ``not-at-minimum`` / ``diverged``;
    :mod:`lit_emergence.llc.diagnostics`) and the hyperparameters. Logs ``llc/<component>``
    and, on ``image_schedule``, the chains' loss traces (W&B). The first time an estimate is
    localisation-dominated it warns once.

    ``n_beta`` defaults to ``n / ln n`` with ``n`` the size of the training set (the length of
    the training dataloader's dataset, or ``num_samples``), the step size to
    ``0.05 / (n_beta + localization)``
    and the localisation to 1 (:mod:`lit_emergence.llc.settings`).

    Args:
        per_head: Estimate every head as well as the whole model (needs a ``blocks[l].attn``
            layout like :class:`~lit_emergence.model.ParticleTransformer`, or ``restrictions_fn``).
        num_chains: Chains per component.
        num_draws: Kept draws per chain.
        num_burnin: Discarded steps before the first draw.
        step_size: SGLD step size; None = ``0.05 / (n_beta + localization)`` (``docs/llc.md``
            says how to calibrate it).
        localization: Localisation strength gamma.
        n_beta: ``n * beta``: a number, ``"n/ln(n)"`` (None, the default: ``n`` the training
            set size) or ``"B/ln(B)"`` (``B = batch_size``, the older rule).
        num_samples: ``n`` for ``n/ln(n)``; None reads the training set size from the
            training dataloader.
        localization_check: Run each component's chains also at ``localization`` divided by
            this (same noise) and report the shift; None skips it and halves the work.
        acceptance_every: Measure the MALA acceptance at every this-many-th draw; None skips.
        sampler: ``"sgld"`` or ``"rmsprop_sgld"``.
        batch_size: Size of each fixed minibatch.
        num_batches: Number of fixed minibatches (drawn once from the training split).
        seed: Base seed of the chains' noise (the step is added, so each point differs).
        model_fn: ``pl_module -> nn.Module`` whose parameters are sampled (default
            ``pl_module.model`` if present, else ``pl_module``).
        loss_fn: ``(outputs, batch) -> loss`` (default MSE against ``batch["target"]``).
        inputs_fn: ``batch -> tuple`` of model inputs (default ``(batch["features"],)``, or
            ``(inputs,)`` for datamodules whose batches are ``(inputs, target)`` pairs).
        restrictions_fn: ``model -> {name: restriction}``, overriding ``per_head``.
        image_schedule: Steps at which loss-trace figures are logged (default 0, 10, 100, ...).
        schedule: When to estimate (default :class:`LogSchedule` with 2 points per decade).
        cuda_graph: Replay each SGLD step from a CUDA graph where the model is on a GPU (the
            same chains up to round-off, several times faster there); ignored on CPU, so one
            config serves both.
        compile: ``torch.compile`` the vectorised gradient (``True`` or a mode name); pays a
            compilation at every estimate, so it helps long estimates only.
        emerging_schedule: Extra steps at which the heads that an
            :class:`~lit_emergence.callbacks.EmergenceDetector` of the same Trainer says are
            emerging (an ``onset`` event, no ``true`` event yet) are estimated, and only they:
            e.g. ``LogSchedule(points_per_decade=10)`` measures a head densely through its
            emergence window while ``schedule`` stays sparse. None (default): off.
        num_probe_samples: Samples drawn for the minibatches; None (default) for
            ``batch_size * num_batches``.
        probe_batch_size: Samples per minibatch; None (default) for ``batch_size``.
        **kwargs: Other arguments of :class:`~lit_emergence.callbacks.base.MeasurementCallback`.
    """

    history_spec = LLC
    probe_split = "train"
    shard_probe = False

    def __init__(
        self,
        per_head: bool = True,
        num_chains: int = 4,
        num_draws: int = 100,
        num_burnin: int = 25,
        step_size: float | None = None,
        localization: float = DEFAULT_LOCALIZATION,
        n_beta: float | str | None = None,
        num_samples: int | None = None,
        localization_check: float | None = 4.0,
        acceptance_every: int | None = 4,
        sampler: str = "sgld",
        batch_size: int = 256,
        num_batches: int = 4,
        seed: int = 0,
        model_fn: Callable[[LightningModule], nn.Module] | None = None,
        loss_fn: LossFn | None = None,
        inputs_fn: InputsFn | None = None,
        restrictions_fn: Callable[[nn.Module], dict[str, Restriction]] | None = None,
        image_schedule: Schedule | None = None,
        schedule: Schedule | None = None,
        cuda_graph: bool = False,
        compile: bool | str = False,
        num_probe_samples: int | None = None,
        probe_batch_size: int | None = None,
        emerging_schedule: Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        check_sampling_settings(
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin=num_burnin,
            step_size=step_size,
            localization=localization,
            sampler=sampler,
            n_beta=n_beta,
            num_samples=num_samples,
            localization_check=localization_check,
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n_beta == "B/ln(B)" and batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for n_beta = B / ln B, got {batch_size}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        # Declared here (not left to **kwargs) so that a LightningCLI config, which writes every
        # parameter out, records None and the minibatches follow batch_size x num_batches.
        super().__init__(
            schedule=schedule or LogSchedule(points_per_decade=2),
            num_probe_samples=num_probe_samples or batch_size * num_batches,
            probe_batch_size=probe_batch_size or batch_size,
            **kwargs,
        )
        self.per_head = per_head
        self.settings = {
            "num_chains": num_chains,
            "num_draws": num_draws,
            "num_burnin": num_burnin,
            "step_size": step_size,
            "localization": localization,
            "n_beta": n_beta,
            "localization_check": localization_check,
            "acceptance_every": acceptance_every,
            "sampler": sampler,
            "compile": compile,
        }
        self.num_samples = num_samples
        self._warned_localization = False
        self.cuda_graph = cuda_graph
        self.batch_size = batch_size
        self.seed = seed
        self.model_fn = model_fn or _default_model
        self.loss_fn = loss_fn or _mse_to_target
        self.inputs_fn = inputs_fn or _features
        self.restrictions_fn = restrictions_fn
        self.image_schedule = image_schedule or LogSchedule(points_per_decade=1)
        self._traces: dict[str, Tensor] | None = None
        self.emerging_schedule = emerging_schedule
        # Components of the heads emerging now (decided on rank 0, the same on every rank).
        self._emerging: list[str] = []

    def fieldnames(self, trainer: Trainer, pl_module: LightningModule) -> Sequence[str]:
        """History columns."""
        return list(LLC.columns)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the components can be built on this model before anything is measured."""
        self.components(self.model_fn(pl_module))
        if self.emerging_schedule is not None and _detector(trainer) is None:
            raise ValueError(
                "LLCMonitor(emerging_schedule=...) follows the heads an EmergenceDetector "
                "flags: add an EmergenceDetector (and its CollisionDetectionMonitor) to the "
                "Trainer's callbacks, or drop emerging_schedule"
            )
        super().on_fit_start(trainer, pl_module)

    def should_run(self, step: int) -> bool:
        """The schedule, and the emerging schedule's steps while a head is emerging."""
        return self.schedule(step) or bool(self._emerging)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Find the emerging heads at the emerging schedule's steps, then measure as due."""
        step = trainer.global_step
        self._emerging = []
        due = self.emerging_schedule is not None and self.emerging_schedule(step)
        if due and step > self.last_measured_step and not self.schedule(step):
            # The detector lives on rank 0; every rank reaches this broadcast at the same
            # (scheduled) steps and then estimates the same components.
            heads = _emerging_heads(_detector(trainer)) if trainer.is_global_zero else []
            self._emerging = trainer.strategy.broadcast(heads, src=0)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def components(self, model: nn.Module) -> dict[str, Restriction]:
        """The components estimated on ``model``: name -> restriction, the whole model first.

        Raises:
            ValueError: With ``per_head`` on a model without recognised attention layers.
        """
        if self.restrictions_fn is not None:
            return self.restrictions_fn(model)
        return _default_restrictions(model, self.per_head)

    def estimate(
        self,
        model: nn.Module,
        batches: Sequence[Any],
        step: int,
        *,
        num_samples: int | None,
        restrictions: Mapping[str, Restriction] | None = None,
        cuda_graph: bool = False,
        **overrides: Any,
    ) -> dict[str, LLCResult]:
        """The estimates this monitor makes at ``step``: the code path of every LLC history.

        :meth:`measure` calls it during training; ``lit-emergence llc`` calls it on a run's
        checkpoints (:mod:`lit_emergence.llc.offline`), and ``lit-emergence llc calibrate``
        with a grid of settings (:mod:`lit_emergence.llc.calibrate`). The chains' seed is
        ``seed + step``, so the same weights, minibatches and settings give the same values
        wherever they are estimated.

        Args:
            model: The module sampled (``model_fn(pl_module)``), at the weights ``w*``.
            batches: The fixed minibatches.
            step: The optimizer step of the weights (offsets the seed).
            num_samples: ``n`` of ``n_beta = n / ln n`` (None where the rule does not need it).
            restrictions: The components to estimate (default: :meth:`components`).
            cuda_graph: Replay each SGLD step from a CUDA graph (the model is on a GPU).
            **overrides: Settings of :func:`~lit_emergence.llc.estimate_llc_many` that replace
                this monitor's (e.g. per-entry ``step_size`` of a calibration grid).

        Returns:
            Component name -> :class:`~lit_emergence.llc.LLCResult`.
        """
        if restrictions is None:
            restrictions = self.components(model)
        # SGLD needs gradients; the estimator works on its own copies of the weights.
        with torch.enable_grad(), warnings.catch_warnings():
            # said once per run by measure(), not at every measurement
            warnings.filterwarnings("ignore", "LLC localisation-dominated")
            return estimate_llc_many(
                model,
                self.loss_fn,
                batches,
                dict(restrictions),
                inputs_fn=self.inputs_fn,
                generator=self.seed + step,
                num_samples=num_samples,
                cuda_graph=cuda_graph,
                **{**self.settings, **overrides},
            )

    def measure(
        self, trainer: Trainer, pl_module: LightningModule, probe: ProbeSet, step: int
    ) -> list[dict[str, Any]]:
        """Estimate this rank's share of the components, then gather every rank's rows."""
        model = self.model_fn(pl_module)
        restrictions = self.components(model)
        if not self.schedule(step):  # an emerging-schedule step: only the emerging heads
            restrictions = {n: r for n, r in restrictions.items() if n in self._emerging}
        names = list(restrictions)[trainer.global_rank :: trainer.world_size]
        rows: list[dict[str, Any]] = []
        traces: dict[str, Tensor] = {}
        if names:
            results = self.estimate(
                model,
                list(probe.batches(self.batch_size)),
                step,
                num_samples=self._num_samples(trainer),
                restrictions={n: restrictions[n] for n in names},
                cuda_graph=self.cuda_graph and pl_module.device.type == "cuda",
            )
            for name, result in results.items():
                rows.append(self.row(name, result))
                traces[name] = result.loss_trace
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (rows, traces))
            rows = [row for rank_rows, _ in gathered for row in rank_rows]
            traces = {k: v for _, rank_traces in gathered for k, v in rank_traces.items()}
        order = {name: index for index, name in enumerate(restrictions)}
        rows.sort(key=lambda row: order[row["component"]])
        if self.images_due(trainer, step, self.image_schedule):
            self._traces = traces
        dominated = [row["component"] for row in rows if row["verdict"] == "localisation-dominated"]
        if dominated and not self._warned_localization and trainer.is_global_zero:
            self._warned_localization = True
            warnings.warn(
                f"LLCMonitor: at step {step} the LLC of {', '.join(dominated)} is "
                "localisation-dominated (verdict column of llc.csv); lower localization "
                f"(now {self.settings['localization']:g}) or raise n_beta. Said once per run",
                UserWarning,
                stacklevel=2,
            )
        return rows

    @property
    def needs_training_set_size(self) -> bool:
        """Whether ``n_beta`` is ``n / ln n`` with ``n`` to be read from the training set."""
        rule = self.settings["n_beta"]
        return self.num_samples is None and rule in (None, "n/ln(n)")

    def _num_samples(self, trainer: Trainer) -> int | None:
        """``n`` of ``n/ln(n)``: given, or the training set size (None when not needed)."""
        if not self.needs_training_set_size:
            return self.num_samples
        size = _training_set_size(trainer)
        if size is None:
            raise ValueError(
                "LLCMonitor: cannot read the training set size for n_beta = n / ln n from the "
                "training dataloader; pass num_samples=<training set size> or n_beta"
            )
        return size

    def row(self, name: str, result: LLCResult) -> dict[str, Any]:
        """The ``llc.csv`` row of one component's estimate (without ``step``, ``lr_integral``)."""
        hyper = result.hyperparameters
        return {
            "component": name,
            "llc_mean": nan_to_none(float(result.llc_mean)),
            "llc_std": nan_to_none(float(result.llc_std)),
            "llc_per_chain": ";".join(repr(float(v)) for v in result.llc_per_chain),
            "num_diverged": int(result.diverged.sum()),
            "trace_rise": nan_to_none(float(result.trace_rise)),
            "still_climbing": bool(result.still_climbing),
            "acceptance": nan_to_none(float(result.acceptance)),
            "llc_weak_localization": nan_to_none(float(result.llc_weak_localization)),
            "localization_shift": nan_to_none(float(result.localization_shift)),
            "exceeds_regular_bound": bool(result.exceeds_regular_bound),
            "verdict": result.verdict,
            "init_loss": float(result.init_loss),
            "num_sampled": int(result.num_sampled),
            "step_size": hyper["step_size"],
            "localization": hyper["localization"],
            "n_beta": hyper["n_beta"],
            "sampler": self.settings["sampler"],
            "num_chains": self.settings["num_chains"],
            "num_draws": self.settings["num_draws"],
        }

    def log_measurement(
        self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]], step: int
    ) -> None:
        """LLC scalars per component; loss-trace figures on the image schedule."""
        metrics = {
            f"llc/{row['component']}": row["llc_mean"] for row in rows if row["llc_mean"] != ""
        }
        metrics["llc/num_diverged_chains"] = sum(row["num_diverged"] for row in rows)
        metrics["llc/num_not_ok"] = sum(row["verdict"] != "ok" for row in rows)
        self.send_scalars(trainer, metrics, step)
        if self._traces is not None:
            figure = loss_traces(self._traces, title=f"SGLD loss traces, step {step}")
            self.send_images(trainer, "llc/loss_traces", [figure_to_array(figure)], step)
            self._traces = None


def _detector(trainer: Trainer) -> Callback | None:
    """The Trainer's EmergenceDetector, if any."""
    from lit_emergence.callbacks.emergence import EmergenceDetector

    return next((c for c in trainer.callbacks if isinstance(c, EmergenceDetector)), None)


def _emerging_heads(detector: Callback | None) -> list[str]:
    """LLC components of the heads with an ``onset`` event and no ``true`` event yet."""
    tracker = getattr(detector, "tracker", None)
    if tracker is None:
        return []
    seen: dict[str, set[tuple[int, int]]] = {"onset": set(), "true": set()}
    for event in tracker.events:
        if event.event in seen:
            seen[event.event].add((event.layer, event.head))
    return [llc_component(*head) for head in sorted(seen["onset"] - seen["true"])]
