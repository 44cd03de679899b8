"""Attention-structure callbacks: schedule, history, non-interference, reuse, DDP, crash-resume."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import (
    PYTHON,
    REPO_ROOT,
    read_rows,
    run_single_and_ddp,
    run_subprocess,
    subprocess_env,
    tiny_config,
    tiny_datamodule,
    train,
)
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    LogSchedule,
    MeasurementCallback,
)
from lit_emergence.cli import main
from lit_emergence.functional import (
    band_collision_score,
    mean_attention_distance,
    neighbour_mask,
    query_correlation,
)
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.csv import CSVHistory

# ----------------------------------------------------------------------------- schedule


def test_log_schedule_includes_zero_and_is_log_spaced():
    schedule = LogSchedule(points_per_decade=4)
    assert schedule.steps_up_to(100) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    assert [s for s in range(1001) if schedule(s)] == schedule.steps_up_to(1000)
    with_linear = LogSchedule(points_per_decade=1, every=250)
    assert with_linear.steps_up_to(1000) == [0, 1, 10, 100, 250, 500, 750, 1000]
    assert LogSchedule(points_per_decade=1, start=100).steps_up_to(10_000) == [0, 100, 1000, 10_000]
    assert not LogSchedule(points_per_decade=1, start=100)(10)
    with pytest.raises(ValueError, match="points_per_decade"):
        LogSchedule(points_per_decade=0)


# ----------------------------------------------------------------------------- history


def test_history_appends_repairs_torn_rows_and_truncates(tmp_path):
    path = tmp_path / "h.csv"
    history = CSVHistory(path, ["step", "value"])
    history.append([{"step": 0, "value": 0.5}, {"step": 1, "value": 0.25}])
    history.append([{"step": 3, "value": 0.125}])
    # A crash in the middle of a write leaves a partial last line: reopening drops it.
    with path.open("a") as handle:
        handle.write("7,0.0")
    reopened = CSVHistory(path, ["step", "value"])
    assert reopened.steps() == [0, 1, 3]
    reopened.truncate_after(1)
    assert [row["value"] for row in reopened.read()] == ["0.5", "0.25"]
    with pytest.raises(ValueError, match="columns"):
        CSVHistory(path, ["step", "other"])


# ----------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------- non-interference


def test_callbacks_do_not_perturb_training(tmp_path):
    plain, _ = train(tmp_path / "plain", [])
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16),
        AttentionDistanceMonitor(num_probe_samples=16),
    ]
    watched, _ = train(tmp_path / "watched", monitors)
    # Bit-identical: the callbacks may not consume RNG, touch gradients or leave eval mode on.
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), watched.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert watched.training
    steps = {
        int(r["step"]) for r in read_rows(tmp_path / "watched/run/emergence/collision_scores.csv")
    }
    assert steps == set(LogSchedule().steps_up_to(12))


class CountingSimulator(LearnedSimulator):
    calls = 0

    def probe_attention(self, batch):
        type(self).calls += 1
        return super().probe_attention(batch)


def test_monitors_share_one_forward_per_probe_chunk(tmp_path):
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16, probe_batch_size=8),
        AttentionDistanceMonitor(num_probe_samples=16, probe_batch_size=8),
    ]
    module = CountingSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=1, n_heads=4, rollout_horizons=[1, 5]
    )
    train(tmp_path, monitors, steps=5, module=module)
    measured_steps = len(LogSchedule().steps_up_to(5))
    # Same probe samples (same size and seed) at the same step: 2 chunks, computed once.
    assert CountingSimulator.calls == 2 * measured_steps


# ----------------------------------------------------------------------------- reuse


class TinyAttentionRegressor(LightningModule):
    """Not a ParticleTransformer: one hand-written attention layer over particles.

    It implements only the documented protocol: ``probe_attention(batch) -> (B, L, H, N, N)``.
    """

    def __init__(self, features: int = 4, width: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.width = heads, width
        self.embed = nn.Linear(features, width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.readout = nn.Linear(width, 2)

    def attention(self, features):
        x = self.embed(features)  # (B, N, W)
        B, N, _ = x.shape
        q = self.query(x).view(B, N, self.heads, -1).transpose(1, 2)
        k = self.key(x).view(B, N, self.heads, -1).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / (self.width // self.heads) ** 0.5
        logits = logits.masked_fill(torch.eye(N, dtype=torch.bool), float("-inf"))
        return x, logits.softmax(-1)  # (B, H, N, N)

    def forward(self, features):
        x, pattern = self.attention(features)
        return self.readout(x + pattern.mean(1) @ x)

    def probe_attention(self, batch):
        return self.attention(batch["features"])[1].unsqueeze(1)  # one layer: (B, 1, H, N, N)

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self(batch["features"]), batch["target"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_callbacks_work_on_a_foreign_model(tmp_path):
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16),
        AttentionDistanceMonitor(num_probe_samples=16),
    ]
    train(tmp_path, monitors, steps=10, module=TinyAttentionRegressor())
    collision = read_rows(tmp_path / "run/emergence/collision_scores.csv")
    distance = read_rows(tmp_path / "run/emergence/attention_distance.csv")
    assert {(r["layer"], r["head"]) for r in collision} == {("0", "0"), ("0", "1")}
    assert {int(r["step"]) for r in distance} == set(LogSchedule().steps_up_to(10))
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in collision)
    assert all(-1.0 <= float(r["pearson"]) <= 1.0 for r in distance)


# ----------------------------------------------------------------------------- loggers


def test_scalars_go_to_any_logger_and_images_only_where_supported(tmp_path):
    seed_everything(0)
    module = LearnedSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=1, n_heads=4, rollout_horizons=[1, 5]
    )
    trainer = Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(str(tmp_path), name="csv", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[CollisionDetectionMonitor(num_probe_samples=8)],
    )
    trainer.fit(module, datamodule=tiny_datamodule(tmp_path / "cache"))
    logged = read_rows(tmp_path / "csv" / "metrics.csv")
    keys = {k for row in logged for k, v in row.items() if v}
    assert {"collision/score/L0H0", "collision/best_score", "collision/num_true"} <= keys


def test_monitors_write_band_scores_and_distance_observables_of_the_probe(tmp_path):
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16, num_bands=3),
        AttentionDistanceMonitor(num_probe_samples=16),
    ]
    module, trainer = train(tmp_path, monitors, steps=2)
    emergence = tmp_path / "run" / "emergence"
    collision = read_rows(emergence / "collision_scores.csv")
    distance = read_rows(emergence / "attention_distance.csv")
    assert list(collision[0])[-4:] == ["head_class", "score_band0", "score_band1", "score_band2"]
    assert list(distance[0])[4:10] == [
        "pearson",
        "g_contact",
        "mean_distance",
        "query_pearson",
        "query_spearman",
        "corr_length",
    ]
    # the last measurement (step 2) is of the final weights: recompute it from the saved probe
    probe = torch.load(emergence / "probe_collision_scores.pt", weights_only=True)
    module.eval()
    with torch.no_grad():
        attention = module.probe_attention(probe)
    box_height = trainer.datamodule.simulation.box_height
    neighbours = neighbour_mask(probe["positions"], probe["radii"], 0.25, probe.get("valid"))
    bands = band_collision_score(attention, neighbours, probe["positions"], box_height, 3)
    contact_distance = 2 * float(probe["radii"].float().mean())
    positions = probe["positions"]
    expected = {
        "mean_distance": mean_attention_distance(attention, positions) / contact_distance,
        "query_pearson": query_correlation(attention, positions),
        "query_spearman": query_correlation(attention, positions, method="spearman"),
    }
    final = [r for r in collision if r["step"] == "2"]
    final_distance = [r for r in distance if r["step"] == "2"]
    assert len(final) == len(final_distance) == 8
    for row, distance_row in zip(final, final_distance, strict=True):
        layer, head = int(row["layer"]), int(row["head"])
        for k in range(3):
            value = float(row[f"score_band{k}"] or "nan")
            # the same float32 attention and float64 sums: equal to round-off
            assert value == pytest.approx(float(bands[layer, head, k]), abs=1e-9, nan_ok=True)
        for column, value in expected.items():
            found = float(distance_row[column])
            assert found == pytest.approx(float(value[layer, head]), abs=1e-9), column
        length = float(distance_row["corr_length"] or "nan")
        assert math.isnan(length) or length > 1.25  # beyond the contact radius
    # num_bands=0 writes no band column
    assert "score_band0" not in CollisionDetectionMonitor(num_bands=0).fieldnames(None, None)
    with pytest.raises(ValueError, match="num_bands"):
        CollisionDetectionMonitor(num_bands=-1)
    with pytest.raises(ValueError, match="length_fraction"):
        AttentionDistanceMonitor(length_fraction=1.5)


def run_cli(args: list[str]) -> None:
    with mock.patch.object(sys, "argv", ["lit-emergence"]):
        main(args)


def tiny_config_with_monitors(probe: int = 16) -> dict:
    config = tiny_config()
    config["trainer"]["callbacks"] += [
        {
            "class_path": "lit_emergence.callbacks.CollisionDetectionMonitor",
            "init_args": {"num_probe_samples": probe},
        },
        {
            "class_path": "lit_emergence.callbacks.AttentionDistanceMonitor",
            "init_args": {"num_probe_samples": probe},
        },
        {
            "class_path": "lit_emergence.callbacks.RelationScoreMonitor",
            "init_args": {
                "num_probe_samples": probe,
                "relations": {  # contact is the collision score's relation
                    "contact": {"class_path": "lit_emergence.callbacks.Contact"},
                    "touching": "contacts",
                    "near": {
                        "class_path": "lit_emergence.callbacks.WithinRadius",
                        "init_args": {"radius": 3.0},
                    },
                },
            },
        },
    ]
    return config


def test_wandb_gets_heatmaps_and_attention_pictures(write_config, in_tmp_dir):
    config_path = write_config(tiny_config_with_monitors())
    run_cli(["fit", "--config", str(config_path), "--run_dir", "runs/w"])
    media = list((in_tmp_dir / "runs/w/wandb").glob("offline-run-*/files/media/images/**/*.png"))
    names = {p.name.rsplit("_", 2)[0] for p in media}
    assert {"heatmap", "attention_on_particles", "heatmaps"} <= names, names


# ----------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_scores_equal_single_process(write_config, in_tmp_dir):
    config = tiny_config_with_monitors(probe=20)
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 1
    config_path = write_config(config)
    run_single_and_ddp(config_path, in_tmp_dir)
    for name, columns in (
        ("collision_scores.csv", ["score", "strict", "impact", "score_band0", "score_band3"]),
        (
            "attention_distance.csv",
            [
                "pearson",
                "g_contact",
                "g_r1.000",
                "g_r2.000",
                "mean_distance",
                "query_pearson",
                "query_spearman",
                "corr_length",
            ],
        ),
        ("relation_scores.csv", ["contact", "touching", "near"]),
    ):
        single = [
            r for r in read_rows(in_tmp_dir / "runs/single/emergence" / name) if r["step"] == "0"
        ]
        ddp = [r for r in read_rows(in_tmp_dir / "runs/ddp/emergence" / name) if r["step"] == "0"]
        assert len(single) == len(ddp) == 4  # one layer x four heads
        for a, b in zip(single, ddp, strict=True):
            for column in columns:
                # Same model (seeded, DDP broadcasts rank 0's weights), same probe set split in
                # two: float64 sums reduced across ranks differ from one pass by round-off only.
                # (an empty cell, e.g. a height band without queries, is empty in both)
                assert (a[column] == "") == (b[column] == ""), (name, column)
                if a[column]:
                    assert abs(float(a[column]) - float(b[column])) <= 1e-6, (name, column)
    # The collision score is the relation score of contact: the same numbers from two monitors.
    for run in ("single", "ddp"):
        emergence = in_tmp_dir / "runs" / run / "emergence"
        collision = read_rows(emergence / "collision_scores.csv")
        relation = read_rows(emergence / "relation_scores.csv")
        assert [r["score"] for r in collision] == [r["contact"] for r in relation]
        assert [r["strict"] for r in collision] == [r["touching"] for r in relation]


# ----------------------------------------------------------------------------- crash + resume


@pytest.mark.slow
def test_sigkill_and_resume_keeps_every_scheduled_step_exactly_once(in_tmp_dir):
    # The quickstart config (model, callbacks), on less data and a smaller probe set,
    # checkpointing every 20 steps.
    max_steps = 200
    config = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 20
        if callback["class_path"].endswith("LLCMonitor"):  # probe = batch_size x num_batches
            callback["init_args"].update(num_draws=8, num_burnin=2, batch_size=32)
        elif "num_probe_samples" in callback.get("init_args", {}):
            callback["init_args"]["num_probe_samples"] = 64
    (in_tmp_dir / "quickstart.yaml").write_text(yaml.safe_dump(config))
    overrides = [
        "--config",
        "quickstart.yaml",
        "--run_dir",
        "runs/q",
        "--wandb",
        "disabled",
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.val_check_interval",
        "200",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.num_train",
        "8",
        "--data.num_val",
        "2",
        "--data.num_test",
        "2",
        "--data.batch_size",
        "32",
        "--data.simulation.num_frames",
        "40",
    ]
    history = in_tmp_dir / "runs/q/emergence/collision_scores.csv"
    process = subprocess.Popen(
        [PYTHON, "-m", "lit_emergence", "fit", *overrides],
        cwd=in_tmp_dir,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: an unread pipe fills up and stalls the child.
        stderr=(in_tmp_dir / "first_run.log").open("w"),
        env=subprocess_env(),
    )
    # Kill once a measurement past the second checkpoint (step 40) is on disk.
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if history.exists() and any(int(r["step"]) > 42 for r in read_rows(history)):
            break
        time.sleep(0.05)
    assert process.poll() is None, (
        "the run ended before it could be killed: "
        + (in_tmp_dir / "first_run.log").read_text()[-2000:]
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(int(r["step"]) for r in read_rows(history))
    assert killed_at < max_steps

    resume = ["--ckpt_path", "runs/q/checkpoints/last.ckpt"]
    run_subprocess("fit", *overrides, *resume, cwd=in_tmp_dir, timeout=300)
    # The quickstart's monitors measure at 20 points per decade, the gauge monitor at its default.
    expected = {
        "collision_scores.csv": LogSchedule(points_per_decade=20).steps_up_to(max_steps),
        "attention_distance.csv": LogSchedule(points_per_decade=20).steps_up_to(max_steps),
        "gauge_invariants.csv": LogSchedule().steps_up_to(max_steps),
    }
    llc_rows = read_rows(in_tmp_dir / "runs/q/emergence/llc.csv")
    llc_steps = [int(r["step"]) for r in llc_rows if r["component"] == "model"]
    assert llc_steps == [0, 100]  # LogSchedule(points_per_decade=1, start=100) up to 200
    for name, steps in expected.items():
        rows = read_rows(in_tmp_dir / "runs/q/emergence" / name)
        per_step: dict[int, int] = {}
        for row in rows:
            per_step[int(row["step"])] = per_step.get(int(row["step"]), 0) + 1
        assert sorted(per_step) == steps, name  # no gaps
        assert set(per_step.values()) == {2 * 8}, name  # no duplicates: 2 layers x 8 heads, once
    # Every detector event (one per head and kind) is recorded once across the crash.
    events = read_rows(in_tmp_dir / "runs/q/emergence/events.csv")
    keys = [(e["layer"], e["head"], e["event"]) for e in events]
    assert len(keys) == len(set(keys))
    config = yaml.safe_load((in_tmp_dir / "runs/q/config.yaml").read_text())
    assert config["run_dir"] == "runs/q"


class _NormMonitor(MeasurementCallback):
    """A history of one's own: the parameter norm, named by ``history_file`` alone."""

    history_file = "parameter_norm.csv"

    def fieldnames(self, trainer, pl_module):
        return ["step", "lr_integral", "norm"]

    def measure(self, trainer, pl_module, probe, step):
        norm = torch.sqrt(sum((p.double() ** 2).sum() for p in pl_module.parameters()))
        return [{"norm": float(norm)}]


def test_a_monitor_of_ones_own_needs_only_a_file_name(tmp_path):
    schedule = LogSchedule(points_per_decade=1)
    train(tmp_path, [_NormMonitor(schedule=schedule, num_probe_samples=4)], steps=10)
    rows = read_rows(tmp_path / "run" / "emergence" / "parameter_norm.csv")
    assert [int(row["step"]) for row in rows] == [0, 1, 10]
    assert (tmp_path / "run" / "emergence" / "probe_parameter_norm.pt").is_file()
    with pytest.raises(TypeError, match="must set history_spec or history_file"):
        _ = type("Nameless", (MeasurementCallback,), {})().history_file
