"""Shared by the gauge benchmarks: a finished run directory's model, data and final head scores.

Thin wrappers over the report's run loader (:mod:`lit_emergence.records.run`), which reads the
same files for ``lit-emergence report``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from lit_emergence.data import ParticleDataModule
from lit_emergence.module import LearnedSimulator
from lit_emergence.records import Unavailable, load_run
from lit_emergence.report import summarize_heads
from lit_emergence.report.checkpoint import load_checkpoint


def load_module(run_dir: Path) -> LearnedSimulator:
    """The run's checkpoint (``last.ckpt`` preferred) on CPU, in eval mode."""
    try:
        return load_checkpoint(load_run(run_dir)).module
    except Unavailable as error:
        raise SystemExit(f"{run_dir}: {error}: train the run first") from error


def load_datamodule(run_dir: Path) -> ParticleDataModule:
    """The run's datamodule from its ``config.yaml``, set up (the data cache is reused)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    datamodule = ParticleDataModule(**config["data"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def final_collision_scores(run_dir: Path) -> tuple[torch.Tensor, int]:
    """Collision scores (L, H) at the last step of the collision history, and that step."""
    summaries = summarize_heads(load_run(run_dir))
    layers = 1 + max(s.layer for s in summaries)
    heads = 1 + max(s.head for s in summaries)
    scores = torch.full((layers, heads), float("nan"), dtype=torch.float64)
    for summary in summaries:
        scores[summary.layer, summary.head] = summary.score
    return scores, max(s.step for s in summaries)
