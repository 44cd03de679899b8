"""The fast training path: device-resident batches, compiled loss, CUDA-graph training step.

The CPU tests run everywhere. The tests marked ``cuda`` need a GPU and are skipped without one.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, tiny_datamodule
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from test_cli import run_cli

from lit_emergence.data import ParticleDataModule
from lit_emergence.data.batches import TrainBatchLoader
from lit_emergence.model import ParticleTransformer
from lit_emergence.module import LearnedSimulator
from lit_emergence.physics import SimulationConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]


def ready_datamodule(cache_dir, **overrides) -> ParticleDataModule:
    """Tiny data with a history and varying radii, so every feature column is exercised."""
    arguments = {
        "simulation": SimulationConfig(num_particles=6, num_frames=24, radius_spread=0.1),
        "num_train": 8,
        "num_val": 2,
        "num_test": 2,
        "batch_size": 16,
        "history": 1,
        "rollout_horizons": [1, 5],
        "rollout_starts": 2,
        "cache_dir": str(cache_dir),
        **overrides,
    }
    datamodule = ParticleDataModule(**arguments)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


class FixedFlips:
    """Stands in for a dataset's augmentation stream: draws that give chosen mirror flags."""

    def __init__(self, flags: torch.Tensor) -> None:
        self.flags = flags.cpu().numpy()

    def random(self, count: int) -> np.ndarray:
        assert count == len(self.flags)
        return np.where(self.flags, 0.25, 0.75)


def tiny_module(in_features: int = 4, **options) -> LearnedSimulator:
    return LearnedSimulator(
        in_features=in_features, out_features=2, d_model=16, n_layers=2, n_heads=4, **options
    )


def quiet_trainer(steps, *, accelerator="cpu", root=None, **trainer) -> Trainer:
    """A one-device trainer of ``steps`` optimizer steps: no validation, logger or progress bar."""
    return Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root) if root else None,
        **trainer,
    )


def fit(module, datamodule, steps, *, accelerator="cpu", callbacks=(), root=None, **trainer):
    """Fit ``steps`` optimizer steps without validation, outputs or progress bar."""
    seed_everything(0)
    trainer = quiet_trainer(
        steps,
        accelerator=accelerator,
        root=root,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
        **trainer,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


# -- device batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_device_batches_equal_the_dataset_batches(tmp_path, device):
    datamodule = ready_datamodule(tmp_path)
    dataset = datamodule.datasets["train"]
    loader = TrainBatchLoader(dataset, 16, device, seed=5)
    batches = list(loader)
    assert len(batches) == len(loader) == len(dataset) // 16
    flips = torch.cat([batch["mirrored"] for batch in batches])
    assert 0.3 < flips.float().mean() < 0.7  # the mirror augmentation is on
    for batch in batches[:4]:
        assert batch["features"].device.type == device
        # The CPU dataset path, fed the same indices and the same mirror flags.
        dataset._rng = FixedFlips(batch["mirrored"])
        expected = dataset.__getitems__(batch["index"].tolist())
        assert set(batch) == set(expected) - {"contacts"}
        for name, value in batch.items():
            torch.testing.assert_close(value.cpu(), expected[name], rtol=1e-6, atol=1e-6)


def test_cpu_and_device_batches_are_the_same_batches(tmp_path):
    # data.device_batches changes where a batch is gathered, never which batch it is; the CPU
    # path also unpacks each sample's contacts, as the dataset does.
    datamodule = ready_datamodule(tmp_path, device_batches=False)
    on_device = ready_datamodule(tmp_path, device_batches=True)
    dataset = datamodule.datasets["train"]
    for batch, other in zip(
        datamodule.train_dataloader(), on_device.train_dataloader(), strict=True
    ):
        assert set(batch) - set(other) == {"contacts"}
        assert all(torch.equal(batch[key], other[key]) for key in other)
        dataset._rng = FixedFlips(batch["mirrored"])
        expected = dataset.__getitems__(batch["index"].tolist())
        assert torch.equal(batch["contacts"], expected["contacts"])


def test_device_batches_shard_ranks_and_follow_the_seed(tmp_path):
    dataset = ready_datamodule(tmp_path).datasets["train"]
    torch_state = torch.get_rng_state()

    def draw(seed: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = TrainBatchLoader(dataset, 8, "cpu", seed=seed, rank=rank, world_size=2)
        batches = [batch for _ in range(2) for batch in loader]  # two epochs
        assert len(batches) == 2 * ((len(dataset) // 2) // 8)
        return (
            torch.cat([b["index"] for b in batches]),
            torch.cat([b["mirrored"] for b in batches]),
        )

    (index0, flips0), (index1, flips1) = draw(0, 0), draw(0, 1)
    per_epoch = len(index0) // 2
    for epoch in range(2):  # ranks share no sample within an epoch
        epoch_slice = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        assert not set(index0[epoch_slice].tolist()) & set(index1[epoch_slice].tolist())
    assert not torch.equal(index0[:per_epoch], index0[per_epoch:])  # a new order each epoch
    assert not torch.equal(flips0, flips1)  # each rank its own mirror stream
    again_index, again_flips = draw(0, 0)
    assert torch.equal(index0, again_index) and torch.equal(flips0, again_flips)
    assert not torch.equal(draw(1, 0)[0], index0)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global stream is untouched


def test_device_batches_train_and_resume_through_lightning(tmp_path):
    datamodule = ready_datamodule(tmp_path / "cache", device_batches=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3)
    module = tiny_module(datamodule.feature_dim)
    trainer = fit(module, datamodule, 3, callbacks=[checkpoint])
    assert isinstance(trainer.train_dataloader, TrainBatchLoader)
    assert trainer.global_step == 3
    resumed = tiny_module(datamodule.feature_dim)
    trainer = quiet_trainer(5, root=tmp_path)
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert trainer.global_step == 5


# -- compile ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_training_on_cpu_keeps_the_plain_model(tmp_path):
    # torch.compile of the tiny model's loss and backward takes ~15 s on 2 CPU cores.
    datamodule = tiny_datamodule(tmp_path / "cache")
    module = tiny_module(compile=True)
    keys = set(module.state_dict())
    trainer = fit(module, datamodule, 2)
    assert trainer.global_step == 2
    assert isinstance(module.model, ParticleTransformer)  # not replaced by a compiled wrapper
    assert set(module.state_dict()) == keys
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        probe, attention = module(batch["features"], return_attention=True)
        loss = module.training_loss(batch["features"], batch["target"])
    assert attention.shape[1:3] == (2, 4)
    torch.testing.assert_close(loss, F.mse_loss(probe, batch["target"]), rtol=1e-5, atol=1e-6)
    copy.deepcopy(module)  # the compiled function is transient state, not copied


# -- misuse ----------------------------------------------------------------------------------


def test_cuda_graph_on_cpu_fails_before_any_data_or_training(tmp_path):
    datamodule = tiny_datamodule(tmp_path / "cache")
    module = tiny_module(cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph") as error:
        fit(module, datamodule, 2, root=tmp_path / "run")
    assert "\n" not in str(error.value)
    assert "model.cuda_graph=false" in str(error.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_cuda_graph_on_cpu_is_a_one_line_cli_error(write_config, in_tmp_dir, capsys):
    config = tiny_config()
    config["model"]["cuda_graph"] = True
    path = write_config(config)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(path)])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lit-emergence: error:"), lines
    assert "cuda_graph" in lines[0]
    assert sorted(p.name for p in in_tmp_dir.iterdir()) == ["tiny.yaml"]


def fake_trainer(strategy=None, **overrides) -> SimpleNamespace:
    """What ``check_fast_path`` reads from a trainer, as on one GPU with defaults."""
    settings = {
        "strategy": strategy or SingleDeviceStrategy(device=torch.device("cuda", 0)),
        "world_size": 1,
        "accumulate_grad_batches": 1,
        "precision": "bf16-mixed",
        "precision_plugin": SimpleNamespace(scaler=None),
        **overrides,
    }
    return SimpleNamespace(**settings)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"strategy": "ddp", "world_size": 2}, "trainer.devices=1"),
        ({"accumulate_grad_batches": 4}, "trainer.accumulate_grad_batches=1"),
        (
            {"precision": "16-mixed", "precision_plugin": SimpleNamespace(scaler=object())},
            "bf16-mixed",
        ),
    ],
    ids=["ddp", "accumulation", "fp16-loss-scaling"],
)
def test_cuda_graph_misuse_is_a_one_line_error(overrides, named):
    if overrides.get("strategy") == "ddp":
        ddp = mock.Mock(spec=DDPStrategy)
        ddp.root_device = torch.device("cuda", 0)
        overrides = {**overrides, "strategy": ddp}
    module = tiny_module(cuda_graph=True)
    module.check_fast_path(fake_trainer())  # the defaults pass
    with pytest.raises(ValueError, match=r"model\.cuda_graph") as error:
        module.check_fast_path(fake_trainer(**overrides))
    assert "\n" not in str(error.value) and named in str(error.value)
    tiny_module().check_fast_path(fake_trainer(**overrides))  # only cuda_graph is checked


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"compile": "fastest"}, "max-autotune-no-cudagraphs"),
        ({"compile": "reduce-overhead", "cuda_graph": True}, "inductor's own CUDA graphs"),
    ],
)
def test_bad_compile_settings_raise_at_construction(options, named):
    with pytest.raises(ValueError, match=named) as error:
        tiny_module(**options)
    assert "\n" not in str(error.value)


# -- CUDA graph (GPU only) -----------------------------------------------------------------------


def cuda_fit(tmp_path, steps, *, fast, compile=False, device_batches=False, **trainer):
    """Fit the tiny model on the GPU in fp32, eagerly or with the CUDA-graph step."""
    datamodule = ready_datamodule(tmp_path / "cache", device_batches=device_batches)
    seed_everything(0)
    module = LearnedSimulator(
        in_features=datamodule.feature_dim,
        out_features=2,
        d_model=32,
        n_layers=2,
        n_heads=4,
        cuda_graph=fast,
        compile=compile,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01),
    )
    trainer = fit(module, datamodule, steps, accelerator="gpu", **trainer)
    return module, trainer, datamodule


# Eager and graphed steps run the same kernels, except that SDPA's memory-efficient backward
# may sum in a different order; a few AdamW steps at lr 1e-3 keep weights within these bounds.
GRAPH_RTOL, GRAPH_ATOL = 1e-4, 1e-5


@cuda
@pytest.mark.parametrize("clip", [None, 0.05], ids=["no-clip", "clip"])
def test_graphed_steps_equal_eager_steps(tmp_path, clip):
    eager, eager_trainer, _ = cuda_fit(tmp_path, 6, fast=False, gradient_clip_val=clip)
    graphed, graphed_trainer, _ = cuda_fit(tmp_path, 6, fast=True, gradient_clip_val=clip)
    assert graphed_trainer.global_step == eager_trainer.global_step == 6
    for (name, expected), actual in zip(
        eager.state_dict().items(), graphed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(actual, expected, rtol=GRAPH_RTOL, atol=GRAPH_ATOL, msg=name)
    # The schedule was stepped once per optimizer step on both sides.
    assert graphed_trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        eager_trainer.optimizers[0].param_groups[0]["lr"]
    )


@cuda
def test_graphed_global_step_and_resume(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=4)
    module, trainer, datamodule = cuda_fit(tmp_path, 4, fast=True, callbacks=[checkpoint])
    assert trainer.global_step == 4
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 4
    assert not any("graph" in key or "_orig_mod" in key for key in saved["state_dict"])
    # Resume the graphed run and the same run eagerly: both continue from step 4 alike.
    results = []
    for fast in (True, False):
        seed_everything(0)
        resumed = LearnedSimulator(**{**dict(module.hparams), "cuda_graph": fast})
        resumed_trainer = quiet_trainer(8, accelerator="gpu", root=tmp_path)
        resumed_trainer.fit(
            resumed, datamodule=datamodule, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
        )
        assert resumed_trainer.global_step == 8
        results.append(resumed.state_dict())
    for name, value in results[0].items():
        torch.testing.assert_close(
            value, results[1][name], rtol=GRAPH_RTOL, atol=GRAPH_ATOL, msg=name
        )


@cuda
def test_fast_path_equals_probe_path_after_graphed_bf16_training(tmp_path):
    module, trainer, datamodule = cuda_fit(
        tmp_path, 20, fast=True, compile=True, device_batches=True, precision="bf16-mixed"
    )
    assert trainer.global_step == 20
    batch = next(iter(datamodule.train_dataloader()))
    module.eval()
    with torch.no_grad():
        fast = module(batch["features"])
        probe, _ = module(batch["features"], return_attention=True)
        loss = module.training_loss(batch["features"], batch["target"])
    torch.testing.assert_close(fast, probe, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, F.mse_loss(probe, batch["target"]), rtol=1e-5, atol=1e-6)
