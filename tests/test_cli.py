"""End-to-end tests of ``lit-emergence fit``: run directories, loggers, errors, DDP."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from conftest import run_subprocess, tiny_config

from lit_emergence.cli import main


def run_cli(args: list[str]) -> None:
    """Call the CLI in-process as the console script would be called (no stray pytest argv)."""
    with mock.patch.object(sys, "argv", ["lit-emergence"]):
        main(args)


def only_run_dir(root: Path) -> Path:
    runs = sorted(p for p in (root / "runs").iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def test_fit_writes_everything_into_one_run_dir(write_config, in_tmp_dir):
    config_path = write_config()
    run_cli(["fit", "--config", str(config_path)])
    run_dir = only_run_dir(in_tmp_dir)
    assert run_dir.name.startswith("tiny-")

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run_dir"] == str(Path("runs") / run_dir.name)
    # Linked, not repeated: the model's input width is not in the config, it comes from the data.
    assert "in_features" not in saved["model"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["in_features"] == 4
    assert "feature_normalizer" in checkpoint

    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = {key for row in rows for key, value in row.items() if value not in ("", None)}
    assert {"train/loss", "val/loss", "val/rollout_rmse_h1", "val/rollout_rmse_h5"} <= logged

    # W&B offline run with the resolved config attached to it.
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    assert "num_particles" in (wandb_runs[0] / "files" / "lit_emergence_config.yaml").read_text()
    # ...and in the run's own record (what `wandb sync` uploads as the run config).
    record = next(wandb_runs[0].glob("run-*.wandb")).read_bytes()
    assert b"num_particles" in record


def test_two_runs_from_one_config_do_not_clash(write_config, in_tmp_dir):
    config = tiny_config()
    config["trainer"]["max_steps"] = 2
    config["wandb"] = "disabled"
    config_path = write_config(config)
    run_cli(["fit", "--config", str(config_path)])
    run_cli(["fit", "--config", str(config_path)])
    run_dirs = sorted((in_tmp_dir / "runs").iterdir())
    assert len(run_dirs) == 2
    assert all((d / "config.yaml").is_file() for d in run_dirs)


BAD_SETTINGS = [
    pytest.param(["--data.simulation.radius=0"], "radius", id="zero-radius"),
    pytest.param(["--data.simulation.radius=-1"], "radius", id="negative-radius"),
    pytest.param(["--data.simulation.num_particles=400"], "num_particles", id="too-many-particles"),
    pytest.param(["--data.simulation.dt=0.1"], "contact duration", id="dt-too-large"),
    pytest.param(["--model.n_heads=0"], "n_heads", id="zero-heads"),
    pytest.param(["--model.d_model=30", "--model.n_heads=4"], "d_model", id="width-not-divisible"),
    pytest.param(["--model.not_a_setting=3"], "not_a_setting", id="unknown-key-flag"),
]


@pytest.mark.parametrize(("extra", "named"), BAD_SETTINGS)
def test_bad_input_one_line_error_and_no_files(write_config, in_tmp_dir, capsys, extra, named):
    config_path = write_config()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config_path), *extra])
    assert exit_info.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err_lines) == 1, err_lines
    assert err_lines[0].startswith("lit-emergence: error:")
    assert named in err_lines[0]
    # Nothing was simulated, cached or logged: only the config file is in the directory.
    assert sorted(p.name for p in in_tmp_dir.iterdir()) == ["tiny.yaml"]


def test_unknown_key_in_config_file(write_config, in_tmp_dir, capsys):
    config = tiny_config()
    config["data"]["simulation"]["frobnicate"] = 1
    config_path = write_config(config)
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(config_path)])
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "frobnicate" in err_lines[0], err_lines
    assert sorted(p.name for p in in_tmp_dir.iterdir()) == ["tiny.yaml"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_on_different_samples(write_config, in_tmp_dir):
    config = tiny_config()
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 6
    config["data"]["batch_size"] = 8
    config_path = write_config(config)
    run_subprocess(
        "fit",
        "--config",
        str(config_path),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.callbacks+=recording.RecordSampleIndices",
        cwd=in_tmp_dir,
        timeout=300,
    )
    run_dir = only_run_dir(in_tmp_dir)
    rank0 = json.loads((run_dir / "sample_indices_rank0.json").read_text())
    rank1 = json.loads((run_dir / "sample_indices_rank1.json").read_text())
    # 6 steps x batch 8 per rank, and no sample seen by both ranks.
    assert len(rank0) == len(rank1) == 6 * 8
    assert not set(rank0) & set(rank1)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
