"""Every setting checked before any work: one line, exit status 2, no traceback, no files.

Each case runs the real CLI in-process on the tiny config with one bad setting. Nothing may be
simulated, cached, logged or checkpointed: the working directory must hold only what the test
put there. A case whose arguments start with ``!`` replaces the whole command line.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import tiny_config

from lit_emergence.cli import main

# Files the test puts in the working directory (a file where a directory is expected, a
# config that is not YAML).
FIXTURES = {"tiny.yaml", "afile", "broken.yaml"}

BAD_SETTINGS = [
    pytest.param(
        "--data.simulation.gravity=.inf", "gravity=inf must be a finite number", id="gravity-inf"
    ),
    pytest.param(
        "--data.simulation.gravity=1e400", "gravity=inf must be a finite number", id="gravity-1e400"
    ),
    pytest.param(
        "--data.simulation.gravity=.nan", "gravity=nan must be a finite", id="gravity-nan"
    ),
    pytest.param("--data.simulation.gravity=-1", "gravity=-1.0 must be >= 0", id="gravity-neg"),
    pytest.param("--data.simulation.stiffness=.inf", "stiffness=inf", id="stiffness-inf"),
    pytest.param("--data.simulation.stiffness=0", "stiffness=0.0 must be > 0", id="stiffness-zero"),
    pytest.param("--data.simulation.stiffness=-5", "stiffness=-5.0", id="stiffness-neg"),
    pytest.param("--data.simulation.restitution=2", "restitution=2.0", id="restitution-2"),
    pytest.param("--data.simulation.restitution=-0.1", "restitution=-0.1", id="restitution-neg"),
    pytest.param("--data.simulation.restitution=0", "restitution=0.0", id="restitution-zero"),
    pytest.param("--data.simulation.box_width=.inf", "box_width=inf", id="box-width-inf"),
    pytest.param("--data.simulation.box_width=0", "box_width=0.0", id="box-width-zero"),
    pytest.param("--data.simulation.box_height=.nan", "box_height=nan", id="box-height-nan"),
    pytest.param("--data.simulation.num_particles=1", "at least 2 particles", id="one-particle"),
    pytest.param("--data.simulation.num_particles=0", "num_particles=0", id="zero-particles"),
    pytest.param("--data.simulation.radius=.inf", "radius=inf", id="radius-inf"),
    pytest.param("--data.simulation.num_frames=1", "num_frames=1", id="frames-1"),
    pytest.param("--data.simulation.substeps=0", "substeps=0", id="substeps-0"),
    pytest.param(
        "--model.optimizer.init_args.lr=-0.1",
        "model.optimizer: Invalid learning rate: -0.1",
        id="lr-neg",
    ),
    pytest.param("--model.optimizer.init_args.lr=.nan", "model.optimizer", id="lr-nan"),
    pytest.param("--model.optimizer.init_args.lr=0", "lr=0.0 must be finite and > 0", id="lr-zero"),
    pytest.param("--model.optimizer.init_args.lr=.inf", "lr=inf", id="lr-inf"),
    pytest.param("--model.optimizer.init_args.weight_decay=-1", "weight_decay", id="wd-neg"),
    pytest.param(
        "--model.scheduler.init_args.warmup_steps=-5",
        "model.scheduler: warmup_steps must be >= 0",
        id="warmup-neg",
    ),
    pytest.param(
        "--model.scheduler.init_args.final_lr_fraction=2", "final_lr_fraction", id="final-frac"
    ),
    pytest.param("--model.dropout=2", "dropout=2.0", id="dropout-2"),
    pytest.param("--model.d_model=0", "d_model=0", id="d-model-0"),
    pytest.param("--model.n_layers=0", "n_layers=0", id="layers-0"),
    pytest.param("--data.batch_size=0", "batch_size must be >= 1", id="batch-0"),
    pytest.param("--data.num_train=0", "num_train must be >= 1", id="num-train-0"),
    pytest.param("--trainer.max_steps=-5", "max_steps", id="max-steps-neg"),
    pytest.param("--trainer.val_check_interval=0", "val_check_interval=0", id="val-interval-0"),
    pytest.param("--trainer.precision=17", "trainer.precision", id="precision-bad"),
    pytest.param(
        "--trainer.accelerator=gpu", "trainer: No supported gpu backend", id="accelerator-gpu"
    ),
    pytest.param("--trainer.devices=0", "devices", id="devices-0"),
    pytest.param("--trainer.gradient_clip_val=-1", "gradient_clip_val=-1", id="grad-clip-neg"),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.CollisionDetectionMontor",
        "did you mean lit_emergence.callbacks.CollisionDetectionMonitor",
        id="unknown-callback",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.LLCMonitor --trainer.callbacks.step_size=0",
        "step_size=0.0 must be finite and > 0",
        id="llc-step-0",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.LLCMonitor --trainer.callbacks.num_chains=0",
        "num_chains=0",
        id="llc-chains-0",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.LLCMonitor --trainer.callbacks.sampler=sgdl",
        "sampler='sgdl' is unknown",
        id="llc-sampler",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.LLCMonitor"
        " --trainer.callbacks.localization=-1",
        "localization=-1.0",
        id="llc-gamma-neg",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.LLCMonitor --trainer.callbacks.num_draws=0",
        "num_draws=0",
        id="llc-draws-0",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.CollisionDetectionMonitor"
        " --trainer.callbacks.tolerance=-1",
        "tolerance must be >= 0",
        id="collision-tol-neg",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.CollisionDetectionMonitor"
        " --trainer.callbacks.true_threshold=1.5",
        "true_threshold=1.5",
        id="collision-thresh",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.CollisionDetectionMonitor"
        " --trainer.callbacks.num_probe_samples=0",
        "num_probe_samples must be >= 1",
        id="probe-0",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.CollisionDetectionMonitor"
        " --trainer.callbacks.schedule=lit_emergence.callbacks.LogSchedule"
        " --trainer.callbacks.schedule.points_per_decade=0",
        "points_per_decade must be > 0",
        id="ppd-0",
    ),
    pytest.param(
        "--trainer.callbacks+=lit_emergence.callbacks.EmergenceDetector"
        " --trainer.callbacks.persistence=0",
        "persistence must be >= 1",
        id="detector-persist-0",
    ),
    pytest.param(
        "!fit --config broken.yaml", "not valid YAML at line 4, column 1", id="yaml-syntax"
    ),
    pytest.param("!fit --config nowhere.yaml", "nowhere.yaml", id="config-missing"),
    pytest.param(
        "--ckpt_path nowhere.ckpt", "checkpoint nowhere.ckpt does not exist", id="ckpt-missing"
    ),
    pytest.param("--run_root afile", "is a file, not a directory", id="run-root-file"),
    pytest.param("--run_dir afile", "is a file, not a directory", id="run-dir-file"),
    pytest.param("--data.cache_dir afile", "cache_dir=afile is a file", id="cache-dir-file"),
    pytest.param("--seed_everything=abc", "seed_everything", id="seed-str"),
    pytest.param("--wandb=sometimes", "wandb", id="wandb-bad"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    config["wandb"] = "offline"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_steps: [1,\n model: {\n")
    return tmp_path


def test_the_table_covers_at_least_40_settings():
    assert len(BAD_SETTINGS) >= 40


@pytest.mark.parametrize(("arguments", "message"), BAD_SETTINGS)
def test_bad_setting_is_one_line_before_any_work(workdir, capsys, arguments, message):
    if arguments.startswith("!"):
        argv = arguments[1:].split()
    else:
        argv = ["fit", "--config", "tiny.yaml", *arguments.split()]
    with mock.patch.object(sys, "argv", ["lit-emergence"]), pytest.raises(SystemExit) as stop:
        main(argv)  # any other exception (a traceback) fails the test
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lit-emergence: error: ")
    assert message in lines[0]
    assert {path.name for path in workdir.iterdir()} == FIXTURES  # nothing left behind


def test_gravity_zero_trains_with_the_impact_score_switched_off(workdir):
    config = tiny_config()
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 2
    config["data"]["simulation"]["gravity"] = 0.0
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lit_emergence.callbacks.CollisionDetectionMonitor",
            "init_args": {"num_probe_samples": 16},
        }
    )
    (workdir / "zero.yaml").write_text(yaml.safe_dump(config))
    argv = ["fit", "--config", "zero.yaml", "--run_dir", "run"]
    with (
        mock.patch.object(sys, "argv", ["lit-emergence"]),
        pytest.warns(UserWarning, match="no 'impact' score, gravity is 0"),
    ):
        main(argv)
    with (workdir / "run" / "emergence" / "collision_scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["impact"] == "" for row in rows)
    assert all(row["score"] != "" and row["strict"] != "" for row in rows)
