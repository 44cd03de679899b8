"""Shared fixtures: W&B strictly offline, a tiny training config, and a temporary working dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

# W&B must never reach the network from a test; offline mode writes to the run directory only.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def tiny_config() -> dict:
    """A complete training config small enough to fit/validate in seconds on one CPU core."""
    return {
        "seed_everything": 0,
        "run_name": "tiny",
        "wandb": "offline",
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 12,
            "val_check_interval": 6,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": 6},
                }
            ],
        },
        "model": {
            "d_model": 16,
            "n_layers": 1,
            "n_heads": 4,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
            "scheduler": {
                "class_path": "lit_emergence.schedules.WarmupCosineLR",
                "init_args": {"warmup_steps": 2},
            },
        },
        "data": {
            "simulation": {"num_particles": 6, "num_frames": 24},
            "num_train": 12,
            "num_val": 2,
            "num_test": 2,
            "batch_size": 16,
            "rollout_horizons": [1, 5],
            "rollout_starts": 2,
            "cache_dir": "data_cache",
        },
    }


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch) -> Path:
    """Run the test inside an empty temporary directory (runs/ and data_cache/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_config(in_tmp_dir):
    """Return a function writing a (modified) tiny config into the temp dir; returns its path."""

    def write(config: dict | None = None, name: str = "tiny.yaml") -> Path:
        path = in_tmp_dir / name
        path.write_text(yaml.safe_dump(config if config is not None else tiny_config()))
        return path

    return write


def subprocess_env() -> dict:
    """Environment for child processes: tests dir importable (for test-only callbacks)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env.pop("LIT_EMERGENCE_RUN_DIR", None)
    return env


PYTHON = sys.executable


def run_single_and_ddp(config_path: Path, cwd: Path) -> None:
    """Fit ``config_path`` once in one process (runs/single) and once on 2 gloo ranks (runs/ddp)."""
    import subprocess

    common = [PYTHON, "-m", "lit_emergence", "fit", "--config", str(config_path)]
    for run_dir, extra in (
        ("runs/single", []),
        ("runs/ddp", ["--trainer.devices=2", "--trainer.strategy=ddp"]),
    ):
        result = subprocess.run(
            [*common, "--run_dir", run_dir, *extra],
            cwd=cwd, capture_output=True, text=True, timeout=300, env=subprocess_env(),
        )
        assert result.returncode == 0, result.stderr[-3000:]
