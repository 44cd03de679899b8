"""Runs that survive a crash exactly: SIGKILL, resume, and compare with the uninterrupted run.

Real processes through the CLI, killed with SIGKILL (no cleanup, no flush) after a step that
is not a checkpoint step and mid-epoch, then resumed with ``--ckpt_path last``. Exact means
exact: final weights ``torch.equal``, every emergence history byte-identical, and every
``metrics.csv`` row of the uninterrupted run present once with the same values.
"""

from __future__ import annotations

import random
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import read_rows, run_subprocess, subprocess_env, tiny_config

from lit_emergence.data.batches import TrainBatchLoader
from lit_emergence.records import load_run
from lit_emergence.records.schema import MEASURED
from lit_emergence.resume import BATCH_COLUMN, WANDB_ID_FILE, read_resume_point

# 12 trajectories x 23 samples / 16 per batch = 17 batches per epoch: a checkpoint every 10
# steps lands mid-epoch, and 60 steps cross three epoch boundaries.
STEPS, EVERY, KILL = 60, 10, 37


def _config(wandb: str = "disabled") -> dict:
    config = tiny_config()
    config["wandb"] = wandb
    config["trainer"]["max_steps"] = STEPS
    config["trainer"]["val_check_interval"] = 20
    config["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "every_n_train_steps": EVERY},
        },
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        *(
            {
                "class_path": f"lit_emergence.callbacks.{name}",
                "init_args": {
                    "num_probe_samples": 16,
                    "schedule": {
                        "class_path": "lit_emergence.callbacks.LogSchedule",
                        "init_args": {"points_per_decade": 10},
                    },
                },
            }
            for name in ("CollisionDetectionMonitor", "AttentionDistanceMonitor")
        ),
        {"class_path": "lit_emergence.callbacks.EmergenceDetector"},
    ]
    config["model"]["dropout"] = 0.1  # random draws in training: the RNG state must resume too
    return config


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without Lightning's informational seed line; no traceback allowed."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("Seed set to")]


def _fit(
    cwd: Path,
    *args: str,
    devices: int = 1,
    kill_at: int | None = None,
    kill_rank: int = 0,
    kill_after: float | None = None,
) -> subprocess.CompletedProcess:
    command = ["fit", *args]
    if devices > 1:
        command += [f"--trainer.devices={devices}", "--trainer.strategy=ddp"]
    env = subprocess_env()
    if kill_at is not None:  # arms the KillAtStep callback of the run's config
        env.update(KILL_AT_STEP=str(kill_at), KILL_RANK=str(kill_rank))
    if kill_after is not None:
        env.update(KILL_AFTER_SECONDS=str(kill_after), KILL_RANK=str(kill_rank))
    return run_subprocess(*command, cwd=cwd, env=env, check=False)


# A crash-on-cue callback in the config of every run that is killed (see recording.KillAtStep).
KILLABLE = "--trainer.callbacks+=recording.KillAtStep"


def _weights(run_dir: Path, steps: int = STEPS) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == steps
    return checkpoint["state_dict"]


def _rows_by_step_and_key(path: Path) -> dict[tuple[str, str], str]:
    """``(step, key) -> value`` of every logged value; fails if one is logged twice."""
    values: dict[tuple[str, str], str] = {}
    for row in read_rows(path):
        for key, value in row.items():
            if value == "" or key in ("step", "epoch", BATCH_COLUMN):  # context columns
                continue
            assert (row["step"], key) not in values, f"{key} logged twice at step {row['step']}"
            values[row["step"], key] = value
    return values


def _assert_same_run(whole: Path, resumed: Path, steps: int = STEPS) -> None:
    weights, again = _weights(whole, steps), _weights(resumed, steps)
    assert weights.keys() == again.keys()
    different = [name for name in weights if not torch.equal(weights[name], again[name])]
    assert different == []
    for spec in (*MEASURED.values(),):
        if (whole / "emergence" / spec.file).exists():
            expected = (whole / "emergence" / spec.file).read_bytes()
            assert (resumed / "emergence" / spec.file).read_bytes() == expected, spec.file
    expected = (whole / "emergence" / "events.csv").read_bytes()
    assert (resumed / "emergence" / "events.csv").read_bytes() == expected
    metrics = _rows_by_step_and_key(whole / "csv" / "metrics.csv")
    assert metrics == _rows_by_step_and_key(resumed / "csv" / "metrics.csv")
    assert any(key == "train/loss" and int(step) >= steps - 2 for step, key in metrics)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("resume")
    (cwd / "run.yaml").write_text(yaml.safe_dump(_config()))
    result = _fit(cwd, "--config", "run.yaml", "--run_dir", "whole")
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(uninterrupted):
    cwd = uninterrupted
    killed = _fit(cwd, "--config", "run.yaml", "--run_dir", "crashed", KILLABLE, kill_at=KILL)
    assert killed.returncode == -9  # SIGKILL
    resume = read_resume_point(cwd / "crashed" / "checkpoints" / "last.ckpt")
    assert resume.global_step == 30 and 30 % 17 != 0  # mid-epoch
    config = cwd / "crashed" / "config.yaml"
    resumed = _fit(cwd, "--config", str(config), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's mid-epoch warning is gone
    _assert_same_run(cwd / "whole", cwd / "crashed")
    # The config did not change, so it is not written again.
    assert sorted(p.name for p in (cwd / "crashed").glob("config*.yaml")) == ["config.yaml"]


def test_resume_twice_and_a_changed_config_is_kept_beside_in_one_line(uninterrupted):
    cwd = uninterrupted
    first = _fit(cwd, "--config", "run.yaml", "--run_dir", "twice", KILLABLE, kill_at=KILL)
    assert first.returncode == -9
    config = str(cwd / "twice" / "config.yaml")
    second = _fit(cwd, "--config", config, "--ckpt_path", "last", kill_at=47)
    assert second.returncode == -9
    assert read_resume_point(cwd / "twice" / "checkpoints" / "last.ckpt").global_step == 40
    changed = _fit(
        cwd,
        "--config",
        str(cwd / "twice" / "config.yaml"),
        "--ckpt_path",
        "last",
        "--trainer.log_every_n_steps=3",
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    notes = [line for line in changed.stderr.splitlines() if "config changed" in line]
    assert len(notes) == 1 and "trainer.log_every_n_steps" in notes[0]
    assert (cwd / "twice" / "config-1.yaml").is_file()
    weights = _weights(cwd / "whole")
    again = _weights(cwd / "twice")
    assert all(torch.equal(weights[name], again[name]) for name in weights)


def test_ckpt_path_last_without_a_checkpoint(uninterrupted):
    cwd = uninterrupted
    early = _fit(cwd, "--config", "run.yaml", "--run_dir", "early", KILLABLE, kill_at=5)
    assert early.returncode == -9  # killed before the first checkpoint (step 10)
    config = str(cwd / "early" / "config.yaml")
    refused = _fit(cwd, "--config", config, "--ckpt_path", "last")
    assert refused.returncode == 2
    [line] = _error_lines(refused)
    assert "no checkpoint" in line and "--if_no_checkpoint start" in line
    fresh = _fit(cwd, "--config", config, "--ckpt_path", "last", "--if_no_checkpoint", "start")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "starting the run over" in fresh.stderr
    # Started over: the same run as the uninterrupted one, histories of the dead attempt gone.
    _assert_same_run(cwd / "whole", cwd / "early")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.write_bytes(b"not a checkpoint"), "cannot read checkpoint"),
        (
            lambda path: path.write_bytes(
                (Path(path).parents[2] / "whole" / "checkpoints" / "last.ckpt").read_bytes()[:5000]
            ),
            "cannot read checkpoint",
        ),
    ],
    ids=["missing", "garbage", "truncated"],
)
def test_a_bad_checkpoint_is_one_line_before_any_work(uninterrupted, make, message):
    cwd = uninterrupted
    folder = cwd / "bad" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "broken.ckpt"
    path.unlink(missing_ok=True)
    make(path)
    result = _fit(cwd, "--config", "run.yaml", "--run_dir", "bad2", "--ckpt_path", str(path))
    assert result.returncode == 2
    [line] = _error_lines(result)
    assert message in line
    assert not (cwd / "bad2").exists()


def test_ddp_rank_killed_then_resumed_equals_the_uninterrupted_ddp_run(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_config()))
    whole = _fit(tmp_path, "--config", "run.yaml", "--run_dir", "whole", devices=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _fit(
        tmp_path,
        "--config",
        "run.yaml",
        "--run_dir",
        "crashed",
        KILLABLE,
        devices=2,
        kill_at=KILL,
        kill_rank=1,
    )
    assert killed.returncode != 0
    config = str(tmp_path / "crashed" / "config.yaml")
    resumed = _fit(tmp_path, "--config", config, "--ckpt_path", "last", devices=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path / "whole", tmp_path / "crashed")


def test_wandb_resumes_the_same_run(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_config(wandb="offline")))
    killed = _fit(tmp_path, "--config", "run.yaml", "--run_dir", "run", KILLABLE, kill_at=KILL)
    assert killed.returncode == -9
    run_id = (tmp_path / "run" / WANDB_ID_FILE).read_text().strip()
    resumed = _fit(
        tmp_path, "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    offline = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(path.name.endswith(run_id) for path in offline)


def test_loader_position_resumes_the_same_batches(tmp_path):
    from conftest import tiny_datamodule

    datamodule = tiny_datamodule(tmp_path)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert isinstance(loader, TrainBatchLoader)
    per_epoch = len(loader)
    stream = [batch["index"] for _ in range(3) for batch in loader]
    # Stop after batch 5 of epoch 1 and continue in a new loader from the saved position.
    first = datamodule.train_dataloader()
    taken = [batch["index"] for batch in first]
    for number, batch in enumerate(first, start=1):
        taken.append(batch["index"])
        if number == 5:
            break
    state = first.state_dict()
    assert state == {"epoch": 1, "batches_done": 5}
    second = datamodule.train_dataloader()
    second.load_state_dict(state)
    rest = [batch["index"] for _ in range(2) for batch in second]
    assert all(torch.equal(a, b) for a, b in zip(taken + rest, stream, strict=True))
    with pytest.raises(ValueError, match="cannot resume the training batches"):
        second.load_state_dict({"epoch": 0, "batches_done": per_epoch + 1})


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes(uninterrupted):
    cwd = uninterrupted
    # The run's files may not grow past 40 kB (a file-size limit fails writes as a full disk
    # does, EFBIG): the histories and metrics fit, the first checkpoint does not.
    limit = 40_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = ["fit", "--config", "run.yaml", "--run_dir", "full"]
    result = run_subprocess(*command, cwd=cwd, check=False, preexec_fn=small_disk)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert "cannot write" in errors[0] and "MiB free there" in errors[0]
    assert "checkpoints" in errors[0]
    # What was written before stays readable, and the run starts over (no checkpoint yet).
    run = load_run(cwd / "full")
    assert len(run.history("collision")) > 0
    fresh = _fit(
        cwd,
        "--config",
        str(cwd / "full" / "config.yaml"),
        "--ckpt_path",
        "last",
        "--if_no_checkpoint",
        "start",
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    _assert_same_run(cwd / "whole", cwd / "full")


def test_sigkill_at_random_moments_inside_llc_estimates_and_checkpoint_writes(tmp_path):
    # Dense LLC estimates and a checkpoint every 5 steps: most of the run's time is spent in
    # them, so a kill at a random moment mostly lands inside one. Wherever it lands, resuming
    # (or starting over, before the first checkpoint) ends in the uninterrupted run.
    config = _config()
    config["trainer"]["max_steps"] = 30
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 5
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lit_emergence.callbacks.LLCMonitor",
            "init_args": {
                "num_chains": 2,
                "num_draws": 60,
                "num_burnin": 10,
                "batch_size": 16,
                "num_batches": 1,
                "schedule": {
                    "class_path": "lit_emergence.callbacks.LogSchedule",
                    "init_args": {"points_per_decade": 10, "start": 5},
                },
            },
        }
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    whole = _fit(tmp_path, "--config", "run.yaml", "--run_dir", "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    rng = random.Random(0)
    killed = 0
    for attempt in range(2):
        name = f"killed{attempt}"
        run = _fit(
            tmp_path,
            "--config",
            "run.yaml",
            "--run_dir",
            name,
            KILLABLE,
            # Counted from the fit's set-up; training takes ~6 s here, most of it estimating.
            kill_after=rng.uniform(1.0, 4.5),
        )
        if run.returncode == 0:
            continue  # finished before the timer fired: nothing to resume
        assert run.returncode == -9, run.stderr[-3000:]
        killed += 1
        config_path = str(tmp_path / name / "config.yaml")
        resumed = _fit(
            tmp_path, "--config", config_path, "--ckpt_path", "last", "--if_no_checkpoint", "start"
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        _assert_same_run(tmp_path / "whole", tmp_path / name, steps=30)
    assert killed >= 1


def _chattr(flag: str, path: Path) -> bool:
    """Set or clear the immutable flag (which stops even root); False where unsupported."""
    try:
        result = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    except FileNotFoundError:  # no chattr on this machine
        return False
    return result.returncode == 0


@pytest.fixture
def immutable(tmp_path):
    """Make folders read-only for everyone, root included; undone after the test."""
    frozen: list[Path] = []

    def freeze(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if not _chattr("+i", path):
            pytest.skip("chattr +i is not supported on this file system")
        frozen.append(path)

    yield freeze
    for path in frozen:
        _chattr("-i", path)


def test_a_read_only_run_root_is_refused_before_any_work(uninterrupted, immutable):
    cwd = uninterrupted
    immutable(cwd / "locked")
    result = _fit(cwd, "--config", "run.yaml", "--run_root", "locked")
    assert result.returncode == 2
    [line] = _error_lines(result)
    assert "cannot write in locked" in line
    assert list((cwd / "locked").iterdir()) == []


def test_a_read_only_checkpoint_folder_stops_the_run_in_one_line(uninterrupted, immutable):
    cwd = uninterrupted
    immutable(cwd / "frozen" / "checkpoints")  # the histories can be written, checkpoints not
    result = _fit(cwd, "--config", "run.yaml", "--run_dir", "frozen")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot write" in errors[0] and "checkpoints" in errors[0]
    assert len(load_run(cwd / "frozen").history("collision")) > 0
    _chattr("-i", cwd / "frozen" / "checkpoints")
    config = str(cwd / "frozen" / "config.yaml")
    fresh = _fit(cwd, "--config", config, "--ckpt_path", "last", "--if_no_checkpoint", "start")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    _assert_same_run(cwd / "whole", cwd / "frozen")
