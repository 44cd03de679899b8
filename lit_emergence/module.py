"""LightningModule that trains a :class:`~lit_emergence.model.ParticleTransformer` as a simulator.

The network maps the state of every particle at frame ``t`` to its (normalised) velocity change
over the next frame interval. Training minimises the mean squared error on those normalised
targets. Validation reports the same one-step loss and, on a second dataloader, the error of
autoregressive rollouts: the model is fed its own predictions for up to ``max(rollout_horizons)``
frames, and the position error at each horizon is logged in units of the particle diameter.

Fast training (``compile``, ``cuda_graph``; docs/training.md): the training loss can be
computed by a ``torch.compile``-d function and, on one CUDA device, forward, loss and backward
can be captured once in a CUDA graph and replayed every step
(:class:`~lit_emergence.graph_step.GraphedTrainingStep`). Only the training step changes:
``self.model`` stays the plain module, so the probe path (``return_attention=True``),
validation rollouts and the measurement callbacks run eagerly on the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MeanMetric

from lit_emergence.data import FeatureNormalizer
from lit_emergence.graph_step import CUDAGRAPH_COMPILE_MODES, GraphedTrainingStep, LossFn
from lit_emergence.lr_schedules import WarmupCosineLR
from lit_emergence.model import ParticleTransformer

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class LearnedSimulator(LightningModule):
    """A particle transformer trained to predict the next frame of a granular simulation.

    Args:
        in_features: Input features per particle (linked from ``data.feature_dim`` by the CLI).
        out_features: Outputs per particle (linked from ``data.target_dim``).
        d_model: Width of the residual stream.
        n_layers: Number of transformer blocks.
        n_heads: Attention heads per block.
        mlp_ratio: Hidden width of the MLP as a multiple of ``d_model``.
        dropout: Dropout probability (0 in all shipped configs).
        mask_self: Forbid each particle from attending to itself. Unmasked heads park much of
            their attention on the query itself and collision heads rarely emerge
            (``docs/model.md``).
        optimizer: Factory ``params -> Optimizer``; from YAML a ``class_path`` with ``init_args``.
            Weight decay applies to weight matrices only, never to biases or LayerNorm gains.
        scheduler: Factory ``optimizer -> LRScheduler`` stepped every optimizer step, or ``None``.
            A :class:`~lit_emergence.lr_schedules.WarmupCosineLR` without ``total_steps`` gets the
            trainer's step budget.
        rollout_horizons: Horizons (in frames) at which the rollout error is logged (linked from
            ``data.rollout_horizons``).
        compile: ``torch.compile`` the training loss (model forward + MSE; backward follows):
            ``True`` for the default mode or a mode name (``"max-autotune-no-cudagraphs"``,
            ...). Only the training step is compiled; ``self.model``, validation and the
            probe path stay eager. The first steps pay the compilation.
        cuda_graph: Capture forward, loss and backward of the training step in one CUDA graph
            on static input buffers and replay it every step (re-captured if the batch shape
            changes). Needs one CUDA device (no DDP), ``accumulate_grad_batches=1`` and a
            precision without loss scaling (``32-true``, ``bf16-mixed``, ...); checked when
            ``fit`` starts. The optimizer, LR schedule and gradient clipping still run
            eagerly through Lightning. Combine with ``compile: true`` and
            ``data.device_batches: true`` for the fastest GPU training.

    Raises:
        ValueError: If an argument is out of range (one line naming it).

    """

    def __init__(
        self,
        in_features: int = 4,
        out_features: int = 2,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        mask_self: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = WarmupCosineLR,
        rollout_horizons: Sequence[int] = (1, 5, 10, 20),
        compile: bool | str = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__()
        if not rollout_horizons or min(rollout_horizons) < 1:
            raise ValueError(
                f"rollout_horizons must be positive frame counts, got {list(rollout_horizons)}"
            )
        if isinstance(compile, str) and compile not in COMPILE_MODES:
            raise ValueError(
                f"compile={compile!r} is not a torch.compile mode; use true, false or one of "
                f"{', '.join(COMPILE_MODES)}"
            )
        if cuda_graph and compile in CUDAGRAPH_COMPILE_MODES:
            raise ValueError(
                f"compile={compile!r} uses inductor's own CUDA graphs, which cannot run inside "
                "cuda_graph=true; set compile to true or 'max-autotune-no-cudagraphs'"
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model = ParticleTransformer(
            in_features=in_features,
            out_features=out_features,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            mask_self=mask_self,
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.rollout_horizons = sorted(set(int(h) for h in rollout_horizons))
        # Squared position error per horizon; MeanMetric syncs exactly across DDP ranks.
        self.rollout_sq_error = torch.nn.ModuleList(MeanMetric() for _ in self.rollout_horizons)
        # Set from the datamodule in `setup`, or from a checkpoint; needed to roll out.
        self.normalizer: FeatureNormalizer | None = None
        # `compile` would shadow nn.Module.compile, hence the attribute name.
        self.compile_mode: bool | str = compile
        self.cuda_graph = bool(cuda_graph)
        # Transient (never pickled or checkpointed): built on first use in a training step.
        self._compiled_loss: LossFn | None = None
        self._graph_step: GraphedTrainingStep | None = None

    # ----------------------------------------------------------------------------- forward
    def forward(
        self, features: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict normalised velocity changes (B, N, out) for features (B, N, in).

        With ``return_attention=True`` also returns every head's attention (B, L, H, N, N).
        """
        return self.model(features, return_attention=return_attention)

    def probe_attention(self, batch: dict[str, Tensor]) -> Tensor:
        """Return every head's attention (B, L, H, N, N): the measurement callbacks' protocol."""
        _, attention = self.model(batch["features"], return_attention=True)
        return attention

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Take the normalisation statistics from the datamodule (training split only)."""
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        normalizer = getattr(datamodule, "normalizer", None)
        if normalizer is not None:
            self.normalizer = normalizer

    def configure_callbacks(self) -> list[Callback]:
        """Check the fast-path settings against the trainer (first hook of ``fit``).

        It runs before data preparation, so a bad setting stops ``fit`` before any file is
        written. Adds no callbacks.
        """
        if self.trainer.state.fn == TrainerFn.FITTING:
            self.check_fast_path(self.trainer)
        return []

    def check_fast_path(self, trainer: Trainer) -> None:
        """Raise a one-line ``ValueError`` if ``cuda_graph`` cannot train under ``trainer``.

        Args:
            trainer: The trainer about to fit this module.

        Raises:
            ValueError: Naming the setting and what to change.

        """
        if not self.cuda_graph:
            return
        device = trainer.strategy.root_device
        if device.type != "cuda":
            raise ValueError(
                f"model.cuda_graph=true needs a CUDA device, but training runs on {device}; "
                "train on a GPU (trainer.accelerator=gpu) or set model.cuda_graph=false"
            )
        if not isinstance(trainer.strategy, SingleDeviceStrategy) or trainer.world_size > 1:
            raise ValueError(
                f"model.cuda_graph=true supports one device only, got "
                f"{type(trainer.strategy).__name__} with {trainer.world_size} process(es); "
                "set trainer.devices=1 (no DDP) or model.cuda_graph=false"
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "model.cuda_graph=true overwrites the gradients at every step, so it cannot "
                f"accumulate them (trainer.accumulate_grad_batches="
                f"{trainer.accumulate_grad_batches}); set trainer.accumulate_grad_batches=1 "
                "or model.cuda_graph=false"
            )
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(
                f"model.cuda_graph=true cannot scale the loss of trainer.precision="
                f"{trainer.precision}; use trainer.precision=bf16-mixed or 32-true, or set "
                "model.cuda_graph=false"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the normaliser so a checkpoint alone can run rollouts and analyses."""
        if self.normalizer is not None:
            checkpoint["feature_normalizer"] = self.normalizer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the normaliser saved by :meth:`on_save_checkpoint`."""
        if "feature_normalizer" in checkpoint:
            self.normalizer = FeatureNormalizer.from_state_dict(checkpoint["feature_normalizer"])

    # ----------------------------------------------------------------------------- steps
    def training_loss(self, features: Tensor, target: Tensor) -> Tensor:
        """MSE of the fast (SDPA) path's prediction: the training loss, compiled if asked.

        Args:
            features: (B, N, in_features) normalised inputs.
            target: (B, N, out_features) normalised velocity changes.

        Returns:
            The scalar loss.

        """
        if not self.compile_mode:
            return self._eager_training_loss(features, target)
        if self._compiled_loss is None:
            mode = None if self.compile_mode is True else self.compile_mode
            self._compiled_loss = torch.compile(self._eager_training_loss, mode=mode)
        return self._compiled_loss(features, target)

    def _eager_training_loss(self, features: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(self.model(features), target)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimizer step on the one-step prediction loss.

        With ``cuda_graph`` the step replays the captured forward and backward; the returned
        loss is then a static tensor without autograd history (see :meth:`backward`).
        """
        if self.cuda_graph:
            if self._graph_step is None:
                self._graph_step = GraphedTrainingStep(self.training_loss, self)
            loss = self._graph_step(batch["features"], batch["target"])
        else:
            loss = self.training_loss(batch["features"], batch["target"])
        # Lightning copies the value on device; it reads it back only when logging.
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Back-propagate, except with ``cuda_graph``, whose replay already wrote the grads."""
        if not self.cuda_graph:
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """Zero the gradients, except with ``cuda_graph``.

        The captured backward writes (not adds) the gradients into the ``.grad`` tensors it
        allocated at capture, so they must never be reset to ``None``.
        """
        if not self.cuda_graph:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_train_start(self) -> None:
        """Capture afresh in every ``fit`` (a new optimizer, possibly new devices)."""
        self._graph_step = None

    def on_train_end(self) -> None:
        """Release the CUDA graph and its memory pool (the grads keep their last values)."""
        self._graph_step = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the compiled function and the CUDA graph (rebuilt on use)."""
        state = super().__getstate__()
        state["_compiled_loss"] = None
        state["_graph_step"] = None
        return state

    def validation_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Dataloader 0: one-step loss. Dataloader 1: autoregressive rollouts."""
        if dataloader_idx == 0:
            loss = F.mse_loss(self.model(batch["features"]), batch["target"])
            self.log("val/loss", loss, prog_bar=True, sync_dist=True, add_dataloader_idx=False)
        else:
            self._accumulate_rollout_error(batch)

    def on_validation_epoch_end(self) -> None:
        """Log the rollout position RMSE (in particle diameters) at every horizon."""
        for horizon, metric in zip(self.rollout_horizons, self.rollout_sq_error, strict=True):
            if metric.update_count == 0 and not self.trainer.world_size > 1:
                continue
            rmse = metric.compute().sqrt()
            self.log(f"val/rollout_rmse_h{horizon}", rmse, add_dataloader_idx=False)
            metric.reset()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Same measurements as validation, on the test split."""
        if dataloader_idx == 0:
            loss = F.mse_loss(self.model(batch["features"]), batch["target"])
            self.log("test/loss", loss, sync_dist=True, add_dataloader_idx=False)
        else:
            self._accumulate_rollout_error(batch)

    def on_test_epoch_end(self) -> None:
        """Log the test rollout RMSE at every horizon."""
        for horizon, metric in zip(self.rollout_horizons, self.rollout_sq_error, strict=True):
            self.log(
                f"test/rollout_rmse_h{horizon}", metric.compute().sqrt(), add_dataloader_idx=False
            )
            metric.reset()

    # ----------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(
        self,
        positions: Tensor,
        velocities: Tensor,
        radii: Tensor,
        steps: int,
        past_velocities: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the learned simulator autoregressively.

        Args:
            positions: Start positions (B, N, 2), in simulation units.
            velocities: Start velocities (B, N, 2).
            radii: Disc radii (B, N).
            steps: Number of frames to predict.
            past_velocities: Velocities before the start frame (B, history, N, 2), most recent
                last, when the model was trained with a history.

        Returns:
            Predicted positions and velocities, each (B, steps + 1, N, 2), frame 0 the input.

        """
        if self.normalizer is None:
            raise RuntimeError(
                "no feature normaliser: call trainer.fit/validate with the datamodule first"
            )
        normalizer = self.normalizer.to(positions.device)
        history = normalizer.history
        past = past_velocities if history > 0 else None
        all_positions, all_velocities = [positions], [velocities]
        for _ in range(steps):
            features = normalizer.features(positions, velocities, radii, past)
            predicted = self.model(features)
            if past is not None:
                past = torch.cat([past[:, 1:], velocities.unsqueeze(1)], dim=1)
            positions, velocities = normalizer.advance(positions, velocities, predicted)
            all_positions.append(positions)
            all_velocities.append(velocities)
        return torch.stack(all_positions, dim=1), torch.stack(all_velocities, dim=1)

    def _accumulate_rollout_error(self, batch: dict[str, Tensor]) -> None:
        true_positions = batch["positions"]  # (B, H+1, N, 2)
        predicted, _ = self.rollout(
            true_positions[:, 0],
            batch["velocities"][:, 0],
            batch["radii"],
            steps=max(self.rollout_horizons),
            past_velocities=batch.get("past_velocities"),
        )
        diameter = 2.0 * batch["radii"].mean()
        for horizon, metric in zip(self.rollout_horizons, self.rollout_sq_error, strict=True):
            error = (predicted[:, horizon] - true_positions[:, horizon]) / diameter
            metric.update(error.square().sum(dim=-1).mean(dim=-1))  # per scene, mean over particles

    # ----------------------------------------------------------------------------- optim
    def check_optimization(self) -> None:
        """Build the optimizer and its schedule once on a throwaway parameter, before any work.

        Optimizers and schedulers are built by Lightning only when training starts, after the
        data was simulated; this surfaces a bad argument (a negative learning rate, a
        misspelt keyword) first. A setting that can only be checked on its device (a fused
        CUDA optimizer) is left to the optimizer itself.

        Raises:
            ValueError: One line naming ``model.optimizer`` or ``model.scheduler``.
        """
        probe = [torch.nn.Parameter(torch.zeros(1))]
        try:
            optimizer = self.optimizer_factory(probe)
        except (TypeError, ValueError, RuntimeError) as error:
            if "fused" in str(error) or "CUDA" in str(error):
                return
            raise ValueError(f"model.optimizer: {error}") from None
        for group in optimizer.param_groups:
            lr = float(group.get("lr", 1.0))
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"model.optimizer: lr={lr} must be finite and > 0")
        if self.scheduler_factory is not None:
            try:
                self.scheduler_factory(optimizer)
            except (TypeError, ValueError) as error:
                raise ValueError(f"model.scheduler: {error}") from None

    def configure_optimizers(self) -> Any:
        """Build the optimizer (weight decay on weight matrices only) and its per-step schedule."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = self.optimizer_factory(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps is None:
            scheduler.total_steps = int(self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
