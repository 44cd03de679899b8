"""The W&B run a fit makes, read back from its offline files: no mocks, no network.

What is logged under which keys (per-head quantities as tables and multi-line charts, fewer
than 40 chart keys for the quickstart's instruments), grouping, job type and tags, the resolved
config as a real file, the summary and its heads table, the alert of a new true head, and the
same W&B run after a resume.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_subprocess, tiny_config, train
from lightning.pytorch.callbacks import ModelCheckpoint
from test_detection import CrashAt, CrashError, scripted_attention

from lit_emergence.callbacks import (
    CollisionDetectionMonitor,
    EmergenceDetector,
    LogSchedule,
    RunSummary,
)
from lit_emergence.callbacks.base import HEAD_KEY
from lit_emergence.lightning_cli import WANDB_CONFIG_FILE, RunWandbLogger
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.csv import read_rows
from lit_emergence.records.wandb_offline import OfflineRun, offline_runs, read_offline_run


def _quickstart_in_small(path: Path) -> Path:
    """configs/quickstart.yaml with its instruments as they are, on a tiny model for 12 steps."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    tiny = tiny_config()
    config["model"].update(d_model=16, n_layers=2, n_heads=4)
    config["data"] = tiny["data"]
    config["trainer"].update(
        max_steps=12,
        val_check_interval=6,
        log_every_n_steps=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    for callback in config["trainer"]["callbacks"]:
        args = callback.setdefault("init_args", {})
        if "num_probe_samples" in args:
            args["num_probe_samples"] = 16
        if callback["class_path"].endswith("ModelCheckpoint"):
            args["every_n_train_steps"] = 6
        if callback["class_path"].endswith("LLCMonitor"):
            args.update(num_draws=4, num_burnin=2, batch_size=8, num_batches=1)
            args["schedule"]["init_args"]["start"] = 10
    path.write_text(yaml.safe_dump(config))
    return path


def _finished(run_dir: Path, timeout: float = 60.0) -> OfflineRun:
    """The offline run once W&B's service has written its last record (finish() returns first)."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def _fit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_subprocess("fit", *args, cwd=cwd)


def test_quickstart_instruments_make_a_grouped_tagged_run_of_few_charts(in_tmp_dir):
    config = _quickstart_in_small(in_tmp_dir / "quickstart.yaml")
    _fit(in_tmp_dir, "--config", str(config), "--run_dir", "runs/q", "--wandb_group", "exp1")
    run_dir = in_tmp_dir / "runs" / "q"
    run = read_offline_run(run_dir)
    assert run.exit_code == 0  # the command returns when its W&B run is written
    assert (run.group, run.job_type) == ("exp1", "fit")
    assert set(run.tags) == {"config:quickstart", "seed:0"}

    # A few dozen charts, not one per head and quantity; lower-case keys throughout.
    assert len(run.history_keys) < 40, sorted(run.history_keys)
    assert not [key for key in run.history_keys if HEAD_KEY.match(key)]
    assert all(key == key.lower() for key in run.history_keys), sorted(run.history_keys)
    for family in ("collision", "attention_distance", "gauge", "llc"):
        assert f"{family}/heads" in run.history_keys
    for chart in ("collision/score", "attention_distance/pearson", "llc/llc"):
        assert f"{chart}_by_head_table" in run.history_keys  # W&B's table behind the chart
    assert {"collision/heatmap", "train/loss", "val/loss", "llc/model"} <= run.history_keys

    # The last head table holds every measured step and head, as the history does.
    history = read_rows(run_dir / "emergence" / "collision_scores.csv").rows
    table = run.tables("collision/heads")[-1]
    assert table["columns"][:4] == ["step", "head", "layer", "head_index"]
    assert len(table["data"]) == len(history)
    score = table["columns"].index("score")
    assert [row[score] for row in table["data"]] == pytest.approx(
        [float(row["score"]) for row in history]
    )

    # The config is a real file in the run's files, and the summary is there too.
    assert WANDB_CONFIG_FILE in run.files and "summary.md" in run.files
    copy = run.directory / "files" / WANDB_CONFIG_FILE
    assert not copy.is_symlink() and copy.read_text() == (run_dir / "config.yaml").read_text()
    assert run.summary["summary/step"] == 12
    heads = run.summary_table("summary/heads")
    assert heads["columns"][:5] == ["head", "layer", "head_index", "class", "score"]

    # A resumed run continues the same W&B run (same id, group and job type), and its head
    # table still holds the steps measured before the resume.
    _fit(
        in_tmp_dir,
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",
        "last",
        "--trainer.max_steps",
        "16",
    )
    first, second = (read_offline_run(path) for path in offline_runs(run_dir))
    assert second.run_id == first.run_id
    assert (second.group, second.job_type) == ("exp1", "fit")
    history = read_rows(run_dir / "emergence" / "collision_scores.csv").rows
    assert len(second.tables("collision/heads")[-1]["data"]) == len(history)
    assert second.summary["summary/step"] == 16


@pytest.mark.parametrize("alert", [True, False])
def test_a_new_true_head_raises_an_alert_and_fills_the_summary(tmp_path, alert):
    run_dir = tmp_path / "run"
    logger = RunWandbLogger(save_dir=str(run_dir), project="test", offline=True, id=f"a{alert:d}")
    callbacks = [
        EmergenceDetector(wandb_alert=alert),
        CollisionDetectionMonitor(
            num_probe_samples=16, schedule=LogSchedule(every=2), attention_fn=scripted_attention
        ),
    ]
    module = LearnedSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=1, n_heads=4, rollout_horizons=[1, 5]
    )
    try:
        train(
            tmp_path,
            [*callbacks, RunSummary()],
            36,
            module,
            run_dir=run_dir,
            cache_dir=tmp_path / "cache",
            logger=logger,
        )
    finally:
        logger.experiment.finish()
    run = _finished(run_dir)
    titles = [title for title, _ in run.alerts]
    assert titles == (["L0H0 became a true collision head"] if alert else [])
    assert run.summary["summary/true_heads"] == "L0H0"
    assert run.summary["summary/num_true"] == 1
    heads = run.summary_table("summary/heads")
    assert [row[0] for row in heads["data"] if row[3] == "true"] == ["L0H0"]
    # The detector's per-head event steps: one table, a column per event.
    events = run.tables("emergence/heads")[-1]
    assert "true_step" in events["columns"] and "onset_step" in events["columns"]


def test_seeds_and_their_report_form_one_group_and_end_with_one_table(write_config, in_tmp_dir):
    config = tiny_config()
    config["trainer"]["max_steps"] = 4
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lit_emergence.callbacks.CollisionDetectionMonitor",
            "init_args": {"num_probe_samples": 8},
        }
    )
    path = write_config(config)
    result = run_subprocess(
        "seeds", "--config", str(path), "--seeds", "0", "1", "--run_root", "runs/s", cwd=in_tmp_dir
    )
    root = in_tmp_dir / "runs" / "s"
    seeds = [read_offline_run(root / f"tiny-seed{seed}") for seed in (0, 1)]
    report = read_offline_run(root / "report")
    assert seeds[0].group == seeds[1].group == report.group != ""
    assert [run.job_type for run in (*seeds, report)] == ["fit", "fit", "report"]
    assert [sorted(run.tags) for run in seeds] == [
        ["config:tiny", "seed:0"],
        ["config:tiny", "seed:1"],
    ]
    assert seeds[0].run_id != seeds[1].run_id
    # One table over the seeds at the end, also in RUN_ROOT/summary.md.
    table = (root / "summary.md").read_text()
    assert table.split("\n\n", 1)[1] in result.stdout
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows] == ["seed", "0", "1"]


def test_tables_after_a_resume_hold_the_rows_from_before_it(tmp_path):
    def fit(steps: int, extra: list, ckpt_path: Path | None = None) -> None:
        logger = RunWandbLogger(save_dir=str(run_dir), project="test", offline=True, id="resumed")
        callbacks = [
            EmergenceDetector(),
            CollisionDetectionMonitor(
                num_probe_samples=16, schedule=LogSchedule(every=2), attention_fn=scripted_attention
            ),
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                every_n_train_steps=10,
                save_top_k=-1,
                filename="{step}",
            ),
        ]
        module = LearnedSimulator(
            in_features=4,
            out_features=2,
            d_model=16,
            n_layers=1,
            n_heads=4,
            rollout_horizons=[1, 5],
        )
        try:
            train(
                tmp_path,
                [*callbacks, *extra],
                steps,
                module,
                run_dir=run_dir,
                cache_dir=tmp_path / "cache",
                logger=logger,
                ckpt_path=ckpt_path,
            )
        finally:
            logger.experiment.finish()

    run_dir = tmp_path / "run"
    with pytest.raises(CrashError):
        fit(30, [CrashAt(25)])
    fit(30, [], ckpt_path=run_dir / "checkpoints" / "step=20.ckpt")
    first, second = (_finished(path) for path in offline_runs(run_dir))
    assert first.run_id == second.run_id == "resumed"
    history = read_rows(run_dir / "emergence" / "collision_scores.csv").rows
    assert len(second.tables("collision/heads")[-1]["data"]) == len(history)
    events = second.tables("emergence/heads")[-1]
    flagged = {
        (row[1], column)
        for row in events["data"]
        for column, value in zip(events["columns"], row, strict=True)
        if column.endswith("_step") and value
    }
    # Events flagged before the checkpoint (onset of L0H0 by step 20) are in the table.
    assert ("L0H0", "onset_step") in flagged and ("L0H0", "partial_step") in flagged
