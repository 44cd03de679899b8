"""Tests of the data layer: cache, generation, normalisation, datasets and the DataModule."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

import lit_emergence.data.generate as generate_module
from lit_emergence.data import FeatureNormalizer, ParticleDataModule
from lit_emergence.data.arrays import pack_contacts, unpack_contacts
from lit_emergence.data.cache import CacheError, atomic_cache_writer, load_arrays
from lit_emergence.data.dataset import (
    OneStepDataset,
    RolloutDataset,
    augmentation_rng,
    passthrough_collate,
)
from lit_emergence.data.generate import cache_directory, cache_key, split_generator
from lit_emergence.physics import SimulationConfig, simulate

# A small, crowded box (7.3 wide: not a whole number of diameters) with fast initial
# velocities, so that 20 frames already contain many collisions.
SMALL = {
    "num_particles": 6,
    "num_frames": 20,
    "box_width": 7.3,
    "box_height": 10.0,
    "init_speed": 2.0,
    "init_gap": 0.5,
}

# float32 data: differences of numbers of order 1-10 carry rounding errors of ~1e-6.
F32_ATOL = 1e-5


def make_datamodule(cache_dir: Path, physics: dict | None = None, **overrides):
    """A small DataModule; ``physics`` updates the SMALL simulation settings."""
    arguments = {
        "simulation": SimulationConfig(**{**SMALL, **(physics or {})}),
        "num_train": 4,
        "num_val": 2,
        "num_test": 2,
        "batch_size": 16,
        "rollout_horizons": [1, 3, 5],
        "rollout_starts": 3,
        "cache_dir": str(cache_dir),
        "generation_batch": 3,  # 4 training scenes: one full chunk and a partial one
        "mirror_augment": False,
    }
    arguments.update(overrides)
    return ParticleDataModule(**arguments)


def ready_datamodule(cache_dir: Path, physics: dict | None = None, **overrides):
    datamodule = make_datamodule(cache_dir, physics, **overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def cache_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir())


def all_samples(dataset) -> dict[str, torch.Tensor]:
    return dataset.__getitems__(list(range(len(dataset))))


# -- cache ----------------------------------------------------------------------------------


def test_cache_round_trip_and_seeded_chunks(tmp_path, monkeypatch):
    first = make_datamodule(tmp_path)
    first.prepare_data()
    (directory,) = cache_dirs(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["key"]["simulation"] == first.simulation.to_dict()
    assert set(meta["arrays"]) == {
        f"{split}_{name}"
        for split in ("train", "val", "test")
        for name in ("positions", "velocities", "radii", "contacts_packed")
    }
    assert all(len(entry["sha256"]) == 64 for entry in meta["arrays"].values())

    # A second DataModule loads the cache without simulating anything.
    def no_simulation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(generate_module, "simulate", no_simulation)
    second = make_datamodule(tmp_path)
    second.prepare_data()
    for split in ("train", "val", "test"):
        for name, array in first.splits[split].as_dict().items():
            np.testing.assert_array_equal(second.splits[split].as_dict()[name], array)
    monkeypatch.undo()

    # Chunk 0 of the training split is exactly simulate() driven by the split's generator.
    trajectory = simulate(first.simulation, 3, generator=split_generator(0, "train"))
    train = first.splits["train"]
    np.testing.assert_array_equal(train.positions[:3], trajectory.positions.numpy())
    np.testing.assert_array_equal(train.velocities[:3], trajectory.velocities.numpy())
    np.testing.assert_array_equal(train.radii[:3], trajectory.radii.numpy())
    np.testing.assert_array_equal(
        train.contacts(slice(0, 3), slice(None)), trajectory.contacts.numpy()
    )
    # The splits come from different streams.
    assert not np.array_equal(first.splits["val"].positions, train.positions[:2])


def test_corrupted_array_warns_and_regenerates(tmp_path):
    original = make_datamodule(tmp_path)
    original.prepare_data()
    (directory,) = cache_dirs(tmp_path)
    path = directory / "train_velocities.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip one byte of the array data
    path.write_bytes(bytes(data))

    with pytest.warns(UserWarning, match="checksum mismatch") as record:
        regenerated = make_datamodule(tmp_path)
        regenerated.prepare_data()
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(
        regenerated.splits["train"].velocities, original.splits["train"].velocities
    )
    assert cache_dirs(tmp_path) == [directory]  # replaced in place, no leftovers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the repaired cache loads silently
        make_datamodule(tmp_path).prepare_data()


def test_mismatched_meta_warns_and_regenerates(tmp_path):
    make_datamodule(tmp_path).prepare_data()
    (directory,) = cache_dirs(tmp_path)
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["key"]["simulation"]["gravity"] = 2.0
    meta_path.write_text(json.dumps(meta))

    with pytest.warns(UserWarning, match="different configuration"):
        make_datamodule(tmp_path).prepare_data()
    assert json.loads(meta_path.read_text())["key"]["simulation"]["gravity"] == 1.0


def test_failed_generation_leaves_no_partial_directory(tmp_path, monkeypatch):
    calls = []

    def failing_simulate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return simulate(*args, **kwargs)

    monkeypatch.setattr(generate_module, "simulate", failing_simulate)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_datamodule(tmp_path).prepare_data()
    assert cache_dirs(tmp_path) == []  # neither the final nor the temporary directory
    monkeypatch.undo()
    make_datamodule(tmp_path).prepare_data()
    assert len(cache_dirs(tmp_path)) == 1


def test_concurrent_writers_keep_one_valid_cache(tmp_path):
    key = {"name": "demo"}
    directory = cache_directory(tmp_path, key)
    # Writer A starts first, writer B finishes first; A must then discard its own copy.
    with atomic_cache_writer(directory, key) as writer_a:
        writer_a.allocate("x", (3,), np.float32)[:] = 1.0
        with atomic_cache_writer(directory, key) as writer_b:
            writer_b.allocate("x", (3,), np.float32)[:] = 2.0
    np.testing.assert_array_equal(load_arrays(directory, key)["x"], 2.0)
    assert cache_dirs(tmp_path) == [directory]

    # An invalid directory in the way is replaced.
    (directory / "meta.json").write_text("{not json")
    with pytest.raises(CacheError):
        load_arrays(directory, key)
    with atomic_cache_writer(directory, key) as writer:
        writer.allocate("x", (3,), np.float32)[:] = 3.0
    np.testing.assert_array_equal(load_arrays(directory, key)["x"], 3.0)
    assert cache_dirs(tmp_path) == [directory]
    with pytest.raises(CacheError, match="different configuration"):
        load_arrays(directory, {"name": "other"})


def test_cache_key_covers_generation_settings():
    config = SimulationConfig(**SMALL)
    sizes = {"train": 4, "val": 2, "test": 2}
    base = cache_key(config, sizes, 0, 3)
    assert cache_key(config, {**sizes, "val": 3}, 0, 3) != base
    assert cache_key(config, sizes, 1, 3) != base
    assert cache_key(config, sizes, 0, 4) != base
    assert cache_key(SimulationConfig(**{**SMALL, "gravity": 2.0}), sizes, 0, 3) != base


# -- normalisation --------------------------------------------------------------------------


def test_normalizer_uses_training_split_only(tmp_path):
    reference = ready_datamodule(tmp_path)
    other = ready_datamodule(tmp_path, num_val=3, num_test=1)
    for name, value in reference.normalizer.state_dict().items():
        assert torch.equal(
            torch.as_tensor(other.normalizer.state_dict()[name]), torch.as_tensor(value)
        )

    train = reference.splits["train"]
    velocities = train.velocities.astype(np.float64)
    change = velocities[:, 1:] - velocities[:, :-1]
    normalizer = reference.normalizer
    # Statistics are accumulated in float64 and stored in float32: relative error ~1e-7.
    np.testing.assert_allclose(normalizer.velocity_scale, velocities.reshape(-1, 2).std(0), 1e-6)
    np.testing.assert_allclose(normalizer.target_mean, change.reshape(-1, 2).mean(0), 1e-5, 1e-7)
    np.testing.assert_allclose(normalizer.target_std, change.reshape(-1, 2).std(0), 1e-6)
    # float32 storage of the box centre.
    assert normalizer.center.tolist() == pytest.approx([SMALL["box_width"] / 2, 5.0], rel=1e-7)
    assert normalizer.length_scale.item() == 2.0
    assert normalizer.frame_interval == reference.simulation.frame_interval


def test_normalizer_state_dict_round_trip(tmp_path):
    normalizer = ready_datamodule(tmp_path, history=2).normalizer
    state = pickle.loads(pickle.dumps(normalizer.state_dict()))
    restored = FeatureNormalizer.from_state_dict(state).to("cpu")
    for name, value in normalizer.state_dict().items():
        assert torch.equal(torch.as_tensor(restored.state_dict()[name]), torch.as_tensor(value))
    with pytest.raises(ValueError, match="keys"):
        FeatureNormalizer.from_state_dict({"center": normalizer.center})


def test_features_and_targets_match_raw_data(tmp_path):
    datamodule = ready_datamodule(tmp_path, {"radius_spread": 0.3}, history=2)
    assert datamodule.feature_dim == 4 + 2 * 2 + 1
    dataset = datamodule.datasets["train"]
    normalizer = datamodule.normalizer
    arrays = datamodule.splits["train"]
    batch = all_samples(dataset)
    scene = (batch["index"] // (arrays.num_frames - 1 - 2)).numpy()
    frame = batch["frame"].numpy()
    assert frame.min() == 2 and frame.max() == arrays.num_frames - 2  # t >= history

    positions = torch.from_numpy(arrays.positions[scene, frame])
    velocities = torch.from_numpy(arrays.velocities[scene, frame])
    next_positions = torch.from_numpy(arrays.positions[scene, frame + 1])
    next_velocities = torch.from_numpy(arrays.velocities[scene, frame + 1])
    radii = torch.from_numpy(arrays.radii[scene])
    torch.testing.assert_close(batch["positions"], positions, rtol=0, atol=0)
    torch.testing.assert_close(batch["velocities"], velocities, rtol=0, atol=0)

    features = batch["features"]
    assert features.shape == (len(dataset), 6, datamodule.feature_dim)
    assert features.dtype == torch.float32
    center = torch.tensor([SMALL["box_width"] / 2, SMALL["box_height"] / 2])
    torch.testing.assert_close(features[..., 0:2], (positions - center) / 2.0)
    torch.testing.assert_close(features[..., 2:4], velocities / normalizer.velocity_scale)
    for k, lag in enumerate((2, 1)):  # oldest first
        past = torch.from_numpy(arrays.velocities[scene, frame - lag])
        torch.testing.assert_close(batch["past_velocities"][:, k], past, rtol=0, atol=0)
        torch.testing.assert_close(
            features[..., 4 + 2 * k : 6 + 2 * k], past / normalizer.velocity_scale
        )
    torch.testing.assert_close(features[..., 8], radii / 1.0)

    change = normalizer.denormalize_target(batch["target"])
    torch.testing.assert_close(change, next_velocities - velocities, rtol=0, atol=F32_ATOL)

    # advance() with the true velocity change reproduces the next velocity (up to float32
    # rounding through normalise/denormalise) ...
    new_positions, new_velocities = normalizer.advance(positions, velocities, batch["target"])
    torch.testing.assert_close(new_velocities, next_velocities, rtol=0, atol=F32_ATOL)
    # ... and the next position up to the error of assuming constant acceleration over the
    # frame: |x' - x_true| <= dt * max_s |v(s) - (v + v')/2|, which is dt * |dv| / 2 when the
    # velocity changes monotonically within the frame. A disc may be hit twice within one
    # frame, so we allow twice that, measured with the largest |dv| in the batch.
    frame_interval = normalizer.frame_interval
    error = (new_positions - next_positions).norm(dim=-1)
    largest_change = (next_velocities - velocities).norm(dim=-1).max()
    assert error.max() <= frame_interval * largest_change
    # Discs in free fall (no contact partner, well clear of every wall in both frames) move
    # with constant acceleration, where the update is exact up to float32 rounding.
    radius = radii.unsqueeze(-1)
    reach = radius + frame_interval * torch.maximum(velocities.abs(), next_velocities.abs())
    upper = torch.tensor([SMALL["box_width"], SMALL["box_height"]])
    clear = ((positions > reach) & (positions < upper - reach)).all(-1)
    clear &= ((next_positions > reach) & (next_positions < upper - reach)).all(-1)
    free = clear & ~batch["contacts"].any(-1)
    assert free.float().mean() > 0.2  # the check below is not vacuous
    torch.testing.assert_close(new_positions[free], next_positions[free], rtol=0, atol=F32_ATOL)


# -- augmentation ---------------------------------------------------------------------------


def test_mirror_augmentation_is_a_physical_mirror(tmp_path):
    datamodule = ready_datamodule(tmp_path, history=1)
    plain = datamodule.datasets["train"]
    mirrored_dataset = OneStepDataset(
        plain.arrays,
        plain.normalizer,
        history=1,
        box_width=SMALL["box_width"],
        mirror_augment=True,
        seed=0,
        rank=0,
    )
    plain_batch = all_samples(plain)
    batch = all_samples(mirrored_dataset)
    flip = batch["mirrored"]
    assert 0.3 < flip.float().mean() < 0.7  # both outcomes occur, at rate ~1/2
    assert not plain_batch["mirrored"].any()

    sign = torch.where(flip, -1.0, 1.0)[:, None]  # (B, 1): -1 on mirrored samples
    width = SMALL["box_width"]
    x = plain_batch["positions"][..., 0]
    expected_x = torch.where(flip[:, None], width - x, x)
    torch.testing.assert_close(batch["positions"][..., 0], expected_x, rtol=0, atol=F32_ATOL)
    torch.testing.assert_close(batch["positions"][..., 1], plain_batch["positions"][..., 1])
    torch.testing.assert_close(
        batch["velocities"][..., 0], sign * plain_batch["velocities"][..., 0]
    )
    torch.testing.assert_close(batch["velocities"][..., 1], plain_batch["velocities"][..., 1])
    torch.testing.assert_close(
        batch["past_velocities"][..., 0], sign[:, None] * plain_batch["past_velocities"][..., 0]
    )
    assert torch.equal(batch["contacts"], plain_batch["contacts"])
    assert torch.equal(batch["radii"], plain_batch["radii"])

    # The mirrored sample is the mirror image of a physical transition: its raw velocity
    # change is the mirrored one, and stepping it gives the mirrored next state.
    normalizer = plain.normalizer
    change = normalizer.denormalize_target(batch["target"])
    plain_change = normalizer.denormalize_target(plain_batch["target"])
    torch.testing.assert_close(change[..., 0], sign * plain_change[..., 0], rtol=0, atol=F32_ATOL)
    torch.testing.assert_close(change[..., 1], plain_change[..., 1], rtol=0, atol=F32_ATOL)
    new_x, new_v = normalizer.advance(batch["positions"], batch["velocities"], batch["target"])
    plain_x, plain_v = normalizer.advance(
        plain_batch["positions"], plain_batch["velocities"], plain_batch["target"]
    )
    expected_new_x = torch.where(flip[:, None], width - plain_x[..., 0], plain_x[..., 0])
    torch.testing.assert_close(new_x[..., 0], expected_new_x, rtol=0, atol=F32_ATOL)
    torch.testing.assert_close(new_v[..., 0], sign * plain_v[..., 0], rtol=0, atol=F32_ATOL)
    # Mirrored discs overlap the walls no deeper than the simulated discs do (soft walls
    # allow small overlaps, the same on both sides of a mirror-symmetric box).
    arrays = plain.arrays
    x_all, r_all = arrays.positions[..., 0], arrays.radii[:, None, :]
    deepest = min((x_all - r_all).min(), (width - x_all - r_all).min())
    x, radii = batch["positions"][..., 0], batch["radii"]
    assert (x - radii).min() >= deepest - F32_ATOL
    assert (width - x - radii).min() >= deepest - F32_ATOL
    # Features: centred x and vx change sign (the box centre is the mirror line).
    features, plain_features = batch["features"], plain_batch["features"]
    for column in (0, 2, 4):  # x, vx, past vx
        torch.testing.assert_close(
            features[..., column], sign * plain_features[..., column], rtol=0, atol=F32_ATOL
        )
    for column in (1, 3, 5):
        torch.testing.assert_close(features[..., column], plain_features[..., column])


def test_augmentation_streams_differ_between_ranks_and_never_touch_global_rng(tmp_path):
    datamodule = ready_datamodule(tmp_path, mirror_augment=True)
    train = datamodule.datasets["train"]

    def flips(rank: int) -> torch.Tensor:
        dataset = OneStepDataset(
            train.arrays,
            train.normalizer,
            box_width=SMALL["box_width"],
            mirror_augment=True,
            rank=rank,
        )
        return torch.cat([dataset.__getitems__(list(range(32)))["mirrored"] for _ in range(2)])

    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    rank0, rank0_again, rank1 = flips(0), flips(0), flips(1)
    assert torch.equal(rank0, rank0_again)  # reproducible per rank
    assert not torch.equal(rank0, rank1)  # 64 coin flips agree by chance with p = 2^-64
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])

    # set_rank() restarts the stream for the new rank.
    train.set_rank(1)
    assert torch.equal(train.__getitems__(list(range(32)))["mirrored"], rank1[:32])
    # Distinct streams for the main process and each worker of each rank.
    draws = {
        (rank, worker): tuple(augmentation_rng(0, rank, worker).random(4))
        for rank in (0, 1)
        for worker in (None, 0, 1)
    }
    assert len(set(draws.values())) == len(draws)


def test_loaders_never_touch_the_global_rng_and_workers_change_nothing(tmp_path):
    # Starting a DataLoader iterator draws a worker seed, from the global random state unless
    # the loader has its own generator: validation would then shift training's random draws.
    plain = ready_datamodule(tmp_path, mirror_augment=True, batch_size=8)
    workers = ready_datamodule(tmp_path, mirror_augment=True, batch_size=8, num_workers=2)
    state = torch.get_rng_state()
    expected = [batch for loader in plain.val_dataloader() for batch in loader]
    batches = [batch for loader in workers.val_dataloader() for batch in loader]
    assert workers.val_dataloader()[0].persistent_workers
    assert len(batches) == len(expected)
    for batch, reference in zip(batches, expected, strict=True):
        assert all(torch.equal(batch[key], reference[key]) for key in reference)
    list(plain.train_dataloader())
    assert torch.equal(torch.get_rng_state(), state)


# -- datasets -------------------------------------------------------------------------------


def test_contacts_unpack_to_the_trajectory_contacts(tmp_path):
    datamodule = ready_datamodule(tmp_path)
    trajectory = simulate(datamodule.simulation, 3, generator=split_generator(0, "train"))
    dataset = datamodule.datasets["train"]
    per_trajectory = dataset.samples_per_trajectory
    batch = dataset.__getitems__(list(range(3 * per_trajectory)))  # the first chunk
    expected = trajectory.contacts.reshape(3 * per_trajectory, 6, 6)
    assert batch["contacts"].dtype == torch.bool
    assert torch.equal(batch["contacts"], expected)
    assert expected.any()  # the small box does produce collisions

    rng = np.random.default_rng(0)
    for num_particles in (1, 8, 9, 17):  # padding bits: none, none, 7, 7
        contacts = rng.random((2, 3, num_particles, num_particles)) < 0.3
        packed = pack_contacts(contacts)
        assert packed.shape == (2, 3, num_particles, (num_particles + 7) // 8)
        assert np.array_equal(unpack_contacts(packed, num_particles), contacts)


@pytest.mark.parametrize("mirror_augment", [False, True])
def test_getitems_equals_stacked_getitem(tmp_path, mirror_augment):
    datamodule = ready_datamodule(tmp_path, history=1)
    base = datamodule.datasets["train"]

    def fresh():
        return OneStepDataset(
            base.arrays,
            base.normalizer,
            history=1,
            box_width=SMALL["box_width"],
            mirror_augment=mirror_augment,
            seed=3,
        )

    indices = [5, 0, 17, 17, 40, len(base) - 1]
    batch = fresh().__getitems__(indices)
    single = fresh()  # the same stream, consumed one sample at a time
    samples = [single[i] for i in indices]
    for name, value in batch.items():
        torch.testing.assert_close(value, torch.stack([s[name] for s in samples]), rtol=0, atol=0)
    assert batch["features"].shape == (6, 6, datamodule.feature_dim)
    assert batch["target"].shape == (6, 6, 2)
    assert batch["index"].dtype == torch.int64 and batch["frame"].dtype == torch.int64

    rollout = datamodule.rollout_datasets["val"]
    batch = rollout.__getitems__([0, 4, 5])
    samples = [rollout[i] for i in (0, 4, 5)]
    for name, value in batch.items():
        assert torch.equal(value, torch.stack([s[name] for s in samples]))
    with pytest.raises(IndexError):
        base.__getitems__([len(base)])


@pytest.mark.parametrize("history", [0, 2])
def test_rollout_windows_match_the_trajectory(tmp_path, history):
    datamodule = ready_datamodule(tmp_path, history=history)
    arrays = datamodule.splits["val"]
    rollout = datamodule.rollout_datasets["val"]
    horizon, num_frames = 5, SMALL["num_frames"]
    assert isinstance(rollout, RolloutDataset)
    assert rollout.starts.tolist()[0] == history  # free fall right after release ...
    assert rollout.starts.tolist()[-1] == num_frames - 1 - horizon  # ... to the latest start
    assert len(set(rollout.starts.tolist())) == 3
    assert len(rollout) == 2 * 3
    batch = all_samples(rollout)
    assert batch["positions"].shape == (6, horizon + 1, 6, 2)
    assert batch["past_velocities"].shape == (6, history, 6, 2)
    for row, (scene, start) in enumerate(zip(batch["index"] // 3, batch["frame"], strict=True)):
        window = slice(int(start), int(start) + horizon + 1)
        assert np.array_equal(batch["positions"][row], arrays.positions[scene, window])
        assert np.array_equal(batch["velocities"][row], arrays.velocities[scene, window])
        past = slice(int(start) - history, int(start))
        assert np.array_equal(batch["past_velocities"][row], arrays.velocities[scene, past])
        assert np.array_equal(batch["radii"][row], arrays.radii[scene])


# -- DataModule -----------------------------------------------------------------------------


def test_dimensions_are_known_before_setup(tmp_path):
    datamodule = make_datamodule(tmp_path, {"radius_spread": 0.2}, history=3)
    assert (datamodule.feature_dim, datamodule.target_dim, datamodule.num_particles) == (11, 2, 6)
    assert make_datamodule(tmp_path).feature_dim == 4
    assert list(tmp_path.iterdir()) == []  # nothing generated by __init__


def test_dataloaders_and_ddp_recreation(tmp_path):
    datamodule = ready_datamodule(tmp_path, mirror_augment=True)
    train = datamodule.train_dataloader()
    batch = next(iter(train))
    assert batch["features"].shape == (16, 6, 4)
    assert batch["contacts"].shape == (16, 6, 6)
    assert len(train) == len(datamodule.datasets["train"]) // 16  # drop_last
    indices = torch.cat([b["index"] for b in train])
    assert len(set(indices.tolist())) == len(indices)  # each sample at most once per epoch

    one_step, rollout = datamodule.val_dataloader()
    assert len(one_step.dataset) == 2 * (SMALL["num_frames"] - 1)
    assert next(iter(rollout))["positions"].shape == (6, 6, 6, 2)  # 2 scenes x 3 starts
    assert not any(b["mirrored"].any() for b in one_step)  # no augmentation outside training
    assert len(datamodule.test_dataloader()) == 2
    assert one_step.collate_fn is passthrough_collate
    assert pickle.loads(pickle.dumps(passthrough_collate)) is passthrough_collate

    # Lightning re-creates the evaluation loaders with a DistributedSampler under DDP (the
    # training loader shards itself across ranks, see tests/test_fast_training.py).
    from lightning.pytorch.utilities.data import _update_dataloader

    sampler = DistributedSampler(one_step.dataset, num_replicas=2, rank=1, shuffle=False)
    recreated = _update_dataloader(one_step, sampler)
    assert recreated.sampler is sampler and recreated.collate_fn is passthrough_collate
    indices = torch.cat([b["index"] for b in recreated])
    assert set(indices.tolist()) == set(sampler)


class _TinyModule(pl.LightningModule):
    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(in_features, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.mse_loss(self.layer(batch["features"]), batch["target"])

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen = getattr(self, "seen", set()) | {dataloader_idx}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_fit_uses_both_validation_loaders(tmp_path):
    datamodule = make_datamodule(tmp_path, mirror_augment=True)
    module = _TinyModule(datamodule.feature_dim)
    trainer = pl.Trainer(
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path / "run",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule)
    assert module.seen == {0, 1}
    assert datamodule.datasets["train"].rank == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_train": 0}, "num_train"),
        ({"num_val": 0}, "num_val"),
        ({"num_test": -1}, "num_test"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10_000}, "batch_size"),
        ({"history": -1}, "history"),
        ({"history": 19}, "history"),
        ({"rollout_horizons": []}, "rollout_horizons"),
        ({"rollout_horizons": [0, 3]}, "rollout_horizons"),
        ({"rollout_horizons": [20]}, "rollout_horizons"),
        ({"history": 15, "rollout_horizons": [5]}, "rollout_horizons"),
        ({"rollout_starts": 0}, "rollout_starts"),
        ({"rollout_starts": 16}, "rollout_starts"),
        ({"num_workers": -1}, "num_workers"),
        ({"seed": -1}, "seed"),
        ({"generation_batch": 0}, "generation_batch"),
        ({"simulation": SimulationConfig(**{**SMALL, "restitution": 0.0})}, "restitution"),
        ({"simulation": SimulationConfig(**{**SMALL, "num_particles": 500})}, "num_particles"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match) as error:
        make_datamodule(tmp_path, **overrides)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_arguments_parse_from_jsonargparse(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ParticleDataModule, "data")
    config = parser.parse_args(
        [
            "--data.simulation.num_particles=6",
            "--data.simulation.radius_spread=0.2",
            "--data.rollout_horizons=[1,2]",
            "--data.history=1",
            f"--data.cache_dir={tmp_path}",
        ]
    )
    datamodule = parser.instantiate(config).data
    assert isinstance(datamodule.simulation, SimulationConfig)
    assert datamodule.simulation.num_particles == 6
    assert datamodule.rollout_horizons == (1, 2)
    assert datamodule.feature_dim == 4 + 2 + 1
