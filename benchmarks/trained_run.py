"""Shared by the gauge benchmarks: a finished run directory's model, data and final head scores."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import yaml

from lit_emergence.data import ParticleDataModule
from lit_emergence.module import LearnedSimulator


def load_module(run_dir: Path) -> LearnedSimulator:
    """The run's ``checkpoints/last.ckpt`` on CPU, in eval mode."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint} does not exist: train the run first")
    return LearnedSimulator.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def load_datamodule(run_dir: Path) -> ParticleDataModule:
    """The run's datamodule from its ``config.yaml``, set up (the data cache is reused)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    datamodule = ParticleDataModule(**config["data"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def final_collision_scores(run_dir: Path) -> tuple[torch.Tensor, int]:
    """Collision scores (L, H) at the last step of ``emergence/collision_scores.csv``, and it."""
    with (run_dir / "emergence" / "collision_scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    last = max(int(row["step"]) for row in rows)
    final = [row for row in rows if int(row["step"]) == last]
    layers = 1 + max(int(row["layer"]) for row in final)
    heads = 1 + max(int(row["head"]) for row in final)
    scores = torch.full((layers, heads), float("nan"), dtype=torch.float64)
    for row in final:
        scores[int(row["layer"]), int(row["head"])] = float(row["score"])
    return scores, last
