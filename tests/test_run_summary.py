"""RunSummary: the run directory at the start; what emerged, as summary.md/json, at the end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from conftest import run_subprocess, tiny_config, train
from lightning.pytorch.callbacks import ModelCheckpoint
from test_detection import CrashAt, CrashError, scripted_attention

from lit_emergence.callbacks import (
    CollisionDetectionMonitor,
    EmergenceDetector,
    LLCMonitor,
    LogSchedule,
    RunSummary,
)
from lit_emergence.detection import lead_times, read_events
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.csv import read_rows
from lit_emergence.records.summary import FitSummary, HeadOutcome, LLCOutcome, seeds_table


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _module() -> LearnedSimulator:
    return LearnedSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=1, n_heads=4, rollout_horizons=[1, 5]
    )


def _callbacks(run_dir: Path, llc: bool = False) -> list:
    """Scripted heads (test_detection): L0H0 turns true near step 12, L0H1 partial by 40."""
    callbacks = [
        EmergenceDetector(),
        CollisionDetectionMonitor(
            num_probe_samples=16, schedule=LogSchedule(every=2), attention_fn=scripted_attention
        ),
        RunSummary(),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            every_n_train_steps=10,
            save_top_k=-1,
            filename="{step}",
        ),
    ]
    if llc:
        callbacks.append(
            LLCMonitor(
                num_chains=2,
                num_draws=4,
                num_burnin=2,
                batch_size=8,
                num_batches=1,
                localization_check=None,
                schedule=LogSchedule(every=20, start=20),
            )
        )
    return callbacks


def _fit(run_dir: Path, cache: Path, callbacks: list, steps: int, ckpt_path=None) -> None:
    train(
        run_dir,
        callbacks,
        steps,
        _module(),
        run_dir=run_dir,
        cache_dir=cache,
        ckpt_path=ckpt_path,
    )


def test_summary_names_heads_with_their_steps_leads_and_llc(tmp_path, data_cache, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        _fit(run_dir, data_cache, _callbacks(run_dir, llc=True), steps=40)
    summary = FitSummary.from_dict(json.loads((run_dir / "summary.json").read_text()))
    assert (summary.step, summary.measured_step, summary.num_heads) == (40, 40, 3)
    classes = {h.label: h.head_class for h in summary.heads}
    assert classes["L0H0"] == "true"
    assert "L0H2" not in classes  # stays uniform: neither true nor partial
    true = summary.of_class("true")[0]
    # The step it became a true head: the first of its last run of scores >= 0.9, which for
    # a head that never fell back is the detector's own `true` event step.
    events = read_events(run_dir / "emergence" / "events.csv")
    (lead,) = [lead for lead in lead_times(events) if (lead.layer, lead.head) == (0, 0)]
    assert true.since_step == lead.true_step
    assert (true.warning_step, true.lead_steps) == (
        lead.true_step - lead.lead_steps,
        lead.lead_steps,
    )
    assert summary.detector and summary.num_events == len(events)
    # The LLC of the whole model and of the true head, from the last llc.csv rows.
    assert summary.llc is not None and summary.llc.step == 40
    assert true.llc is not None
    assert set(summary.losses) == {"train/loss"}
    markdown = (run_dir / "summary.md").read_text()
    assert markdown == summary.markdown()
    for text in ("L0H0", "true", f"lead {lead.lead_steps} steps", "LLC at step 40", "report"):
        assert text in markdown
    # Printed too: the run directory at the start, the summary at the end.
    logged = caplog.text
    assert f"run directory {run_dir}" in logged and "what emerged" in logged


def test_a_resumed_run_summarises_the_whole_run(tmp_path, data_cache):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _fit(whole, data_cache, _callbacks(whole), steps=30)
    with pytest.raises(CrashError):
        _fit(resumed, data_cache, [*_callbacks(resumed), CrashAt(25)], steps=30)
    assert not (resumed / "summary.json").exists()  # a crash writes no summary
    _fit(
        resumed, data_cache, _callbacks(resumed), 30, ckpt_path=resumed / "checkpoints/step=20.ckpt"
    )
    expected = json.loads((whole / "summary.json").read_text())
    got = json.loads((resumed / "summary.json").read_text())
    assert got["resumed_from"] == 20
    for key in ("heads", "best", "measured_step", "num_events", "step"):
        assert got[key] == expected[key], key


def test_summary_without_instruments_says_what_is_missing(tmp_path, data_cache):
    run_dir = tmp_path / "run"
    _fit(run_dir, data_cache, [RunSummary()], steps=2)
    markdown = (run_dir / "summary.md").read_text()
    assert "collision heads: not measured (no CollisionDetectionMonitor)" in markdown
    assert "detector: not in this run" in markdown
    assert "LLC: not measured (no LLCMonitor)" in markdown


def test_seeds_table_and_json_round_trip(tmp_path):
    head = HeadOutcome("L1H6", 1, 6, "true", 0.95, since_step=562, warning="onset")
    summary = FitSummary(
        run_dir="runs/a",
        name="a",
        step=10000,
        measured_step=10000,
        num_heads=16,
        heads=(head,),
        best=head,
        llc=LLCOutcome(10000, 12.5, 0.4, "ok"),
        losses={"train/loss": 0.01, "val/loss": float("nan")},
    )
    (tmp_path / "a").mkdir()
    summary.write(tmp_path / "a")
    back = FitSummary.from_dict(json.loads((tmp_path / "a" / "summary.json").read_text()))
    assert back.heads == summary.heads and back.llc == summary.llc
    assert back.losses["val/loss"] is None  # NaN is not JSON
    table = seeds_table([(0, tmp_path / "a"), (1, tmp_path / "missing")])
    lines = table.splitlines()
    assert lines[0].startswith("| seed") and "L1H6 (562)" in lines[2] and "12.5 ± 0.4" in lines[2]
    assert "no summary" in lines[3]


def _quiet_config(path: Path) -> Path:
    config = tiny_config()
    config["trainer"]["max_steps"] = 6
    config["trainer"]["val_check_interval"] = 3
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lit_emergence.callbacks.CollisionDetectionMonitor",
            "init_args": {"num_probe_samples": 8},
        }
    )
    path.write_text(yaml.safe_dump(config))
    return path


def test_ddp_run_summarises_on_rank_zero_with_a_quiet_console(in_tmp_dir):
    config = _quiet_config(in_tmp_dir / "tiny.yaml")
    command = ["fit", "--config", str(config), "--run_dir", "runs/ddp", "--wandb", "disabled"]
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp"]
    result = run_subprocess(*command, *ddp, cwd=in_tmp_dir, timeout=300)
    console = result.stdout + result.stderr
    (in_tmp_dir / "console.txt").write_text(console)
    assert console.count("what emerged") == 1  # rank 0 only
    assert "lit-emergence: run directory runs/ddp" in console
    summary = json.loads((in_tmp_dir / "runs/ddp/summary.json").read_text())
    history = read_rows(in_tmp_dir / "runs/ddp/emergence/collision_scores.csv").rows
    assert summary["measured_step"] == int(history[-1]["step"]) and summary["num_heads"] == 4
    # No warning asks anything of the user: not the LeafSpec deprecation, not the false
    # sync_dist advice for the exactly reduced rollout errors, not Lightning's litlogger tip.
    for noise in ("LeafSpec", "sync_dist", "litlogger", "Warning", "warn("):
        assert noise not in console, noise
