"""A particle simulator built on torch.nn.TransformerEncoder, measured with zero adapter code.

Run it (the quickstart's system and schedule; about 10 minutes on 2 CPU cores)::

    python docs/examples/transformer_encoder.py --run_dir runs/encoder --max_steps 10000
    lit-emergence report runs/encoder --no_checkpoint
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    EmergenceDetector,
    GaugeInvariantMonitor,
    LLCMonitor,
    LogSchedule,
)
from lit_emergence.data import ParticleDataModule
from lit_emergence.lr_schedules import WarmupCosineLR
from lit_emergence.physics import SimulationConfig


class EncoderNet(nn.Module):
    """Particles are tokens; a pre-norm encoder whose heads may not attend to their own token."""

    def __init__(self, in_features: int, d_model: int = 64, n_heads: int = 8, n_layers: int = 2):
        super().__init__()
        self.embed = nn.Linear(in_features, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.readout = nn.Linear(d_model, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n = features.shape[1]
        no_self = torch.eye(n, dtype=torch.bool, device=features.device)  # True = masked
        return self.readout(self.encoder(self.embed(features), mask=no_self))


class EncoderSimulator(LightningModule):
    """Predicts each disc's velocity change; nothing in it knows about the callbacks."""

    def __init__(self, in_features: int, lr: float = 3e-3, warmup_steps: int = 100) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = EncoderNet(in_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch["features"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        schedule = WarmupCosineLR(
            optimizer, warmup_steps=self.hparams.warmup_steps, total_steps=self.trainer.max_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main(run_dir: str, max_steps: int, num_train: int = 1000, seed: int = 0) -> Trainer:
    """Train on the quickstart's system with every instrument attached."""
    seed_everything(seed)
    data = ParticleDataModule(
        simulation=SimulationConfig(
            num_particles=16, box_width=11.0, box_height=24.0, restitution=0.6, num_frames=140
        ),
        num_train=num_train,
        num_val=32,
        num_test=32,
        batch_size=128,
        mirror_augment=True,
        cache_dir="data_cache",
        seed=seed,
    )
    dense = LogSchedule(points_per_decade=20)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=run_dir,
        logger=False,
        enable_checkpointing=False,
        callbacks=[
            CollisionDetectionMonitor(schedule=dense),
            AttentionDistanceMonitor(schedule=dense),
            EmergenceDetector(),
            GaugeInvariantMonitor(),
            LLCMonitor(  # the quickstart's light settings: every head too, no adapter
                per_head=True,
                num_chains=2,
                num_draws=40,
                num_burnin=10,
                step_size=3e-4,
                n_beta="B/ln(B)",
                localization=100.0,
                localization_check=None,
                batch_size=64,
                num_batches=2,
                schedule=LogSchedule(points_per_decade=1, start=100),
            ),
        ],
    )
    trainer.fit(EncoderSimulator(data.feature_dim), datamodule=data)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/encoder")
    parser.add_argument("--max_steps", type=int, default=10000)
    parser.add_argument("--num_train", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.run_dir, args.max_steps, args.num_train, args.seed)
