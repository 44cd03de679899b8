"""A particle simulator on a Hugging Face BERT built from a config, measured with no adapter code.

Nothing is downloaded: the model is built from a ``BertConfig``. Particles enter as
``inputs_embeds`` (one token per disc); BERT's position embeddings are switched off by
giving every token position 0, so the model sees a set, as the physics asks. Run it::

    python docs/examples/huggingface_bert.py --run_dir runs/bert --max_steps 10000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from transformers import BertConfig, BertModel

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    EmergenceDetector,
    GaugeInvariantMonitor,
    LogSchedule,
)
from lit_emergence.data import ParticleDataModule
from lit_emergence.physics import SimulationConfig


class BertSimulator(LightningModule):
    """Predicts each disc's velocity change with a 2-layer, 8-head BERT encoder."""

    def __init__(self, in_features: int, width: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(
            hidden_size=width,
            num_hidden_layers=2,
            num_attention_heads=8,
            intermediate_size=4 * width,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            vocab_size=1,
            max_position_embeddings=1,
            type_vocab_size=1,
        )
        self.embed = nn.Linear(in_features, width)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.readout = nn.Linear(width, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        same_position = torch.zeros(features.shape[:2], dtype=torch.long, device=features.device)
        hidden = self.bert(inputs_embeds=self.embed(features), position_ids=same_position)
        return self.readout(hidden.last_hidden_state)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch["features"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main(run_dir: str, max_steps: int, num_train: int = 1000, seed: int = 0) -> Trainer:
    """Train on the quickstart's system with the attention instruments attached."""
    seed_everything(seed)
    data = ParticleDataModule(
        simulation=SimulationConfig(
            num_particles=16, box_width=11.0, box_height=24.0, restitution=0.6, num_frames=140
        ),
        num_train=num_train,
        num_val=32,
        num_test=32,
        batch_size=128,
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
        ],
    )
    trainer.fit(BertSimulator(data.feature_dim), datamodule=data)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/bert")
    parser.add_argument("--max_steps", type=int, default=10000)
    parser.add_argument("--num_train", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.run_dir, args.max_steps, args.num_train, args.seed)
