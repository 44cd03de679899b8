"""LLCMonitor: histories for the whole model and every head, no perturbation, DDP split."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import read_rows, run_single_and_ddp, tiny_config, train
from llc_helpers import one_thread  # noqa: F401 (an autouse fixture)
from torch.utils.data import DataLoader, TensorDataset

from lit_emergence.callbacks import LLCMonitor, LogSchedule
from lit_emergence.llc import VERDICTS

SMALL = {"num_chains": 2, "num_draws": 20, "num_burnin": 5, "batch_size": 32, "num_batches": 2}


def test_llc_monitor_leaves_training_bit_identical_and_logs_every_head(tmp_path):
    plain, _ = train(tmp_path / "plain", [])
    watched, _ = train(tmp_path / "watched", [LLCMonitor(**SMALL)])
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), watched.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    rows = read_rows(tmp_path / "watched/run/emergence/llc.csv")
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == LogSchedule(points_per_decade=2).steps_up_to(12)
    components = {r["component"] for r in rows}
    # 2 layers x 4 heads and the whole model, at every scheduled step.
    assert components == {"model"} | {f"l{lay}h{h}" for lay in range(2) for h in range(4)}
    assert len(rows) == len(steps) * len(components)
    for row in rows:
        chains = [float(v) for v in row["llc_per_chain"].split(";")]
        assert len(chains) == 2 and all(math.isfinite(v) for v in chains)
        assert math.isfinite(float(row["llc_mean"]))
        assert row["verdict"] in VERDICTS
        assert 0.0 <= float(row["acceptance"]) <= 1.0
        assert math.isfinite(float(row["llc_weak_localization"]))
        # n_beta = n / ln n of the training set: 8 trajectories x 23 one-step samples
        assert float(row["n_beta"]) == pytest.approx(184 / math.log(184))
        assert float(row["step_size"]) == pytest.approx(0.05 / (float(row["n_beta"]) + 1))
    model_sampled = {int(r["num_sampled"]) for r in rows if r["component"] == "model"}
    head_sampled = {int(r["num_sampled"]) for r in rows if r["component"] == "l0h0"}
    assert max(head_sampled) < min(model_sampled)


@pytest.mark.slow
def test_llc_components_split_across_ddp_ranks_and_gathered(write_config, in_tmp_dir):
    config = tiny_config()
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 1
    config["trainer"]["callbacks"].append(
        {"class_path": "lit_emergence.callbacks.LLCMonitor", "init_args": SMALL}
    )
    config_path = write_config(config)
    run_single_and_ddp(config_path, in_tmp_dir)
    single = read_rows(in_tmp_dir / "runs/single/emergence/llc.csv")
    ddp = read_rows(in_tmp_dir / "runs/ddp/emergence/llc.csv")
    assert [r["component"] for r in ddp] == [r["component"] for r in single]
    # Each component's chains use the same seed wherever they run, on the same fixed
    # minibatches: the estimates agree to float32 round-off of the forward passes.
    for a, b in zip(single, ddp, strict=True):
        assert a["step"] == b["step"]
        assert float(a["llc_mean"]) == pytest.approx(float(b["llc_mean"]), rel=1e-4, abs=1e-6)


def test_per_head_llc_on_a_model_without_attention_is_a_clear_error(tmp_path):
    # Never a silent fall-back to the whole model, never an AttributeError.
    from lit_emergence.llc import attention_head_restrictions

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no attention layer in Linear") as error:
        attention_head_restrictions(model)
    assert "\n" not in str(error.value)
    monitor = LLCMonitor(per_head=True, model_fn=lambda pl_module: model)
    with pytest.raises(ValueError, match=r"LLCMonitor\(per_head=True\): .*Linear"):
        train(tmp_path, [monitor], steps=1)
    assert not (tmp_path / "run" / "emergence" / "llc.csv").exists()


class _PairRegression(pl.LightningModule):
    """Linear regression trained on (x, y) tuple batches, as most people's models are."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class _PairData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(128, 4, generator=generator)
        y = x @ torch.randn(4, 2, generator=generator) + 0.1 * torch.randn(
            128, 2, generator=generator
        )
        self.data = TensorDataset(x, y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=32)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=32)


def fit_pair_regression(tmp_path, monitor: LLCMonitor, steps: int = 10) -> list[dict[str, str]]:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[monitor],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(_PairRegression(), datamodule=_PairData())
    return read_rows(tmp_path / "emergence" / "llc.csv")


SINGLE = {"per_head": False, "num_chains": 2, "num_draws": 20, "num_burnin": 5, "batch_size": 32}


def test_llc_monitor_takes_tuple_batches_without_any_adapter(tmp_path):
    monitor = LLCMonitor(num_batches=2, schedule=LogSchedule(points_per_decade=1), **SINGLE)
    rows = fit_pair_regression(tmp_path, monitor)
    assert [(int(r["step"]), r["component"]) for r in rows] == [
        (0, "model"),
        (1, "model"),
        (10, "model"),
    ]
    assert all(math.isfinite(float(r["llc_mean"])) for r in rows)
    # n_beta = n / ln n with n the 128 samples of the training DataLoader's dataset
    assert all(float(r["n_beta"]) == pytest.approx(128 / math.log(128)) for r in rows)


def test_localisation_dominated_estimates_warn_once_per_run(tmp_path):
    """Near the least-squares fit (steps 50, 100, 150), n_beta = B / ln B = 9.2 and h ~ 1:
    n_beta h ~ 9 against gamma = 1000, every direction counts ~9/1009 / 2 instead of 1/2 and
    about four times that at gamma / 4. Every point is localisation-dominated; one warning."""
    monitor = LLCMonitor(
        per_head=False, localization=1000.0, n_beta="B/ln(B)", num_chains=4, num_draws=100,
        num_burnin=100, batch_size=32, schedule=lambda step: step in (50, 100, 150),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="localisation-dominated") as caught:
        rows = fit_pair_regression(tmp_path, monitor, steps=150)
    said = [w for w in caught if "localisation-dominated" in str(w.message)]
    assert len(said) == 1 and "Said once per run" in str(said[0].message)
    assert [int(r["step"]) for r in rows] == [50, 100, 150]
    assert all(r["verdict"] == "localisation-dominated" for r in rows)
    assert all(float(r["n_beta"]) == pytest.approx(32 / math.log(32)) for r in rows)


def test_a_probe_batch_of_another_shape_is_a_clear_error():
    from lit_emergence.callbacks.probe import _tensors_only

    assert set(_tensors_only((torch.zeros(2, 3), torch.ones(2)))) == {"inputs", "target"}
    with pytest.raises(ValueError, match="an \\(inputs, target\\) pair"):
        _tensors_only("not a batch")


def test_a_cli_config_draws_batch_size_times_num_batches_samples():
    # LightningCLI writes every parameter of a callback out, defaults included; the base
    # class's num_probe_samples (256) used to override batch_size x num_batches that way.
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(LLCMonitor, "llc")
    config = parser.parse_object({"llc": {"batch_size": 8, "num_batches": 3}})
    assert config.llc.num_probe_samples is None
    monitor = LLCMonitor(**config.llc.as_dict())
    assert (monitor.num_probe_samples, monitor.probe_batch_size) == (24, 8)
    assert LLCMonitor(batch_size=8, num_probe_samples=40).num_probe_samples == 40


def test_emerging_heads_are_measured_densely_and_only_they(tmp_path):
    from lit_emergence.callbacks import CollisionDetectionMonitor, EmergenceDetector

    every_step = LogSchedule(points_per_decade=1, every=1)
    # A hair-trigger detector (no noise margin, 1e-6 rise, one measurement) flags onsets in a
    # few steps of a tiny run; the test follows whatever it flags.
    detector = EmergenceDetector(
        baseline_points=1, persistence=1, noise_z=0.0, onset_fraction=1e-6, verbose=False
    )
    monitor = LLCMonitor(
        **SMALL,
        localization_check=None,
        schedule=lambda step: step == 0,
        emerging_schedule=every_step,
    )
    collision = CollisionDetectionMonitor(num_probe_samples=16, schedule=every_step)
    train(tmp_path, [collision, detector, monitor], steps=8)
    emergence = tmp_path / "run" / "emergence"
    events = read_rows(emergence / "events.csv")
    flagged = {}  # component -> (onset flagged at, true flagged at)
    for event in events:
        component = f"l{event['layer']}h{event['head']}"
        if event["event"] in ("onset", "true"):
            flagged.setdefault(component, {})[event["event"]] = int(event["step"])
    assert any("onset" in kinds for kinds in flagged.values()), "no onset: nothing to test"
    rows = read_rows(emergence / "llc.csv")
    first = [r["component"] for r in rows if r["step"] == "0"]
    assert first == ["model"] + [f"l{lay}h{h}" for lay in range(2) for h in range(4)]
    later = [(int(r["step"]), r["component"]) for r in rows if r["step"] != "0"]
    assert later, "no dense estimate although heads were flagged"
    for step, component in later:
        kinds = flagged[component]
        # flagged as emerging by the time of the estimate, and not yet true before it
        assert kinds["onset"] <= step and kinds.get("true", step + 1) >= step, (step, component)


def test_emerging_schedule_without_a_detector_is_a_clear_error(tmp_path):
    monitor = LLCMonitor(**SMALL, emerging_schedule=LogSchedule(points_per_decade=10))
    with pytest.raises(ValueError, match="add an EmergenceDetector"):
        train(tmp_path, [monitor], steps=1)
