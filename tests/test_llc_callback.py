"""LLCMonitor: histories for the whole model and every head, no perturbation, DDP split."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import read_rows, run_single_and_ddp, tiny_config, train
from torch.utils.data import DataLoader, TensorDataset

from lit_emergence.callbacks import LLCMonitor, LogSchedule

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


class _MultiheadBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)


class _ForeignModel(torch.nn.Module):
    """Blocks whose attention is torch's, not ParticleTransformer's layout."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([_MultiheadBlock()])


@pytest.mark.parametrize(
    ("model", "named"),
    [(torch.nn.Linear(2, 2), "Linear has no blocks"), (_ForeignModel(), "MultiheadAttention")],
    ids=["no-blocks", "multihead-attention"],
)
def test_per_head_llc_on_a_model_it_cannot_split_is_a_clear_error(tmp_path, model, named):
    # Never a silent fall-back to the whole model, never an AttributeError.
    from lit_emergence.gauge import head_invariants
    from lit_emergence.llc import attention_head_restrictions

    with pytest.raises(ValueError, match=named):
        attention_head_restrictions(model)
    with pytest.raises(ValueError, match=named):
        head_invariants(model)
    monitor = LLCMonitor(per_head=True, model_fn=lambda pl_module: model)
    with pytest.raises(ValueError, match=rf"LLCMonitor\(per_head=True\): .*{named}"):
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


def test_llc_monitor_takes_tuple_batches_without_any_adapter(tmp_path):
    monitor = LLCMonitor(
        per_head=False,
        num_chains=2,
        num_draws=20,
        num_burnin=5,
        batch_size=32,
        num_batches=2,
        schedule=LogSchedule(points_per_decade=1),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[monitor],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(_PairRegression(), datamodule=_PairData())
    rows = read_rows(tmp_path / "emergence" / "llc.csv")
    assert [(int(r["step"]), r["component"]) for r in rows] == [
        (0, "model"),
        (1, "model"),
        (10, "model"),
    ]
    assert all(math.isfinite(float(r["llc_mean"])) for r in rows)


def test_a_probe_batch_of_another_shape_is_a_clear_error():
    from lit_emergence.callbacks.probe import _tensors_only

    assert set(_tensors_only((torch.zeros(2, 3), torch.ones(2)))) == {"inputs", "target"}
    with pytest.raises(ValueError, match="an \\(inputs, target\\) pair"):
        _tensors_only("not a batch")
