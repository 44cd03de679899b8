"""Shared fixtures: W&B strictly offline, a tiny training config, and a temporary working dir."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from lit_emergence.data import ParticleDataModule
from lit_emergence.module import LearnedSimulator
from lit_emergence.physics import SimulationConfig

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
                "class_path": "lit_emergence.lr_schedules.WarmupCosineLR",
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


def fit_in(root: Path, config: dict, run_dir: str = "runs/tiny") -> None:
    """Run ``lit-emergence fit`` on ``config`` with ``root`` as working directory.

    ``data_cache/`` and ``run_dir`` land under ``root``; the config is written to
    ``root/tiny.yaml`` (the run's config file, as a user would have it).
    """
    from unittest import mock

    from lit_emergence.cli import main as lit_emergence_main

    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        with mock.patch.object(sys, "argv", ["lit-emergence"]):
            lit_emergence_main(["fit", "--config", "tiny.yaml", "--run_dir", run_dir])


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
    # An in-process test's W&B service exports its address; a child must start its own, as a
    # command run from a shell does (a shared service still holds the runs of killed children).
    env.pop("WANDB_SERVICE", None)
    return env


PYTHON = sys.executable


def run_subprocess(
    *args: str,
    cwd: Path,
    timeout: float = 600,
    check: bool = True,
    env: dict | None = None,
    **popen_kwargs,
) -> subprocess.CompletedProcess:
    """Run ``python -m lit_emergence ARGS`` in ``cwd`` as a shell would, output captured.

    Args:
        *args: The command line after ``lit_emergence`` (e.g. ``"fit", "--config", path``).
        cwd: Working directory.
        timeout: Seconds before the test fails as hung.
        check: Fail the test (with the tail of stderr) on a non-zero exit status.
        env: Environment; ``subprocess_env()`` when None.
        **popen_kwargs: Passed to ``subprocess.run`` (e.g. ``preexec_fn``).
    """
    result = subprocess.run(
        [PYTHON, "-m", "lit_emergence", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env() if env is None else env,
        **popen_kwargs,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_single_and_ddp(config_path: Path, cwd: Path) -> None:
    """Fit ``config_path`` once in one process (runs/single) and once on 2 gloo ranks (runs/ddp)."""
    common = ["fit", "--config", str(config_path)]
    run_subprocess(*common, "--run_dir", "runs/single", cwd=cwd, timeout=300)
    run_subprocess(
        *common,
        "--run_dir",
        "runs/ddp",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        cwd=cwd,
        timeout=300,
    )


def tiny_datamodule(cache_dir: Path) -> ParticleDataModule:
    """A datamodule of 8 training trajectories of 6 discs (cached under ``cache_dir``)."""
    return ParticleDataModule(
        simulation=SimulationConfig(num_particles=6, num_frames=24),
        num_train=8,
        num_val=2,
        num_test=2,
        batch_size=16,
        rollout_horizons=[1, 5],
        rollout_starts=2,
        cache_dir=str(cache_dir),
    )


def train(
    tmp_path: Path,
    callbacks: list[Callback],
    steps: int = 12,
    module: LightningModule | None = None,
    *,
    run_dir: Path | None = None,
    cache_dir: Path | None = None,
    logger: Logger | bool = False,
    ckpt_path: Path | None = None,
) -> tuple[LightningModule, Trainer]:
    """Fit a tiny model (seeded) in-process; run dir and cache default to ``tmp_path``'s."""
    seed_everything(0)
    module = module or LearnedSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=2, n_heads=4, rollout_horizons=[1, 5]
    )
    run_dir = run_dir or tmp_path / "run"
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )
    datamodule = tiny_datamodule(cache_dir or tmp_path / "cache")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module, trainer


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows of a CSV file as dictionaries of strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
