"""``lit-emergence seeds``: one run per seed, resumable, one-line errors."""

from __future__ import annotations

import csv
import subprocess

import pytest
import torch
from conftest import run_subprocess, tiny_config

from lit_emergence.seeds import main as seeds_main


def _seeds(args: list[str], cwd) -> subprocess.CompletedProcess:
    return run_subprocess("seeds", *args, cwd=cwd, timeout=300, check=False)


def _first_weight(run_dir) -> torch.Tensor:
    state = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    return next(iter(state["state_dict"].values()))


def test_two_seeds_train_resume_and_skip(write_config, in_tmp_dir):
    config = tiny_config()
    config["trainer"]["max_steps"] = 6
    path = write_config(config)
    extra = ["--", "--wandb", "disabled"]
    result = _seeds(["--config", str(path), "--seeds", "3", "7", "--no_report", *extra], in_tmp_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    root = in_tmp_dir / "runs" / "tiny"
    runs = [root / "tiny-seed3", root / "tiny-seed7"]
    for run_dir in runs:
        assert (run_dir / "checkpoints" / "last.ckpt").exists()
        assert yaml_seed(run_dir) == int(run_dir.name.removeprefix("tiny-seed"))
    # Different seeds, different initialisations (and so different weights after 6 steps).
    assert not torch.equal(_first_weight(runs[0]), _first_weight(runs[1]))
    with (root / "seeds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["seed"], r["status"]) for r in rows] == [("3", "finished"), ("7", "finished")]

    # Re-running skips finished seeds; a seed with a checkpoint but no "finished" record resumes
    # from it (here: seed 7 asked for 6 more steps through the extra arguments).
    (root / "seeds.csv").write_text(
        "seed,run_dir,status,returncode,wall_seconds,finished_at\n3,x,finished,0,1,now\n"
    )
    again = _seeds(
        [
            "--config",
            str(path),
            "--seeds",
            "3",
            "7",
            "--no_report",
            "--",
            "--wandb",
            "disabled",
            "--trainer.max_steps",
            "12",
        ],
        in_tmp_dir,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 3 (1/2)" in again.stdout and "skipped" in again.stdout
    assert "seed 7 (2/2)" in again.stdout and "resuming" in again.stdout
    state = torch.load(
        runs[1] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["global_step"] == 12


def yaml_seed(run_dir) -> int:
    """The seed recorded in a run's resolved config."""
    import yaml

    return int(yaml.safe_load((run_dir / "config.yaml").read_text())["seed_everything"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
        (["--config", "tiny.yaml", "--seeds", "1", "1"], "--seeds must be distinct"),
        (["--config", "tiny.yaml", "--seeds", "x"], "--seeds: 'x' is not an integer"),
        (["--config", "tiny.yaml", "--seeds", "-1"], "--seeds: must be >= 0, got -1"),
    ],
)
def test_bad_arguments_one_line_error(write_config, in_tmp_dir, capsys, args, message):
    write_config()
    with pytest.raises(SystemExit) as exit_info:
        seeds_main(args)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("lit-emergence seeds: error:"), stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (in_tmp_dir / "runs").exists()


def test_bad_setting_stops_at_first_seed(write_config, in_tmp_dir):
    path = write_config()
    result = _seeds(
        ["--config", str(path), "--seeds", "0", "1", "--no_report", "--", "--model.n_heads", "0"],
        in_tmp_dir,
    )
    assert result.returncode == 2
    assert "lit-emergence: error:" in result.stderr and "n_heads" in result.stderr
    assert "seed 1" not in result.stdout  # stopped before trying the second seed
