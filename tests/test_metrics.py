"""Tests for lit_emergence.metrics: batch accumulation and a real two-process DDP reduction."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_emergence.functional import (
    attention_distance_correlation,
    band_collision_score,
    collision_score,
    connected_correlation,
    correlation_length,
    default_r_grid,
    mean_attention_distance,
    neighbour_mask,
    query_correlation,
)
from lit_emergence.metrics import (
    AttentionDistanceCorrelation,
    BandCollisionScore,
    CollisionScore,
    ConnectedCorrelation,
    QueryDistance,
)

L, H, N = 2, 3, 6
BOX_HEIGHT, BANDS = 5.0, 3  # the probe's positions lie in a 5 x 5 box
CONTACT_INDEX = 2  # the radius of the grid whose G is the reference of the correlation length
# Float64 sums of the same terms, only grouped differently (per batch or per rank, then
# added): round-off ~1e-15 relative, amplified at most ~1e2 by the raw-moment Pearson formula.
EXACT = dict(rtol=1e-12, atol=1e-12)


def probe_set(seed: int = 0, batch: int = 8, num: int = N) -> dict[str, torch.Tensor]:
    """A fixed random probe set: softmax attention with mask_self, scenes, masks."""
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch, L, H, num, num, generator=g)
    attention = logits.masked_fill(torch.eye(num, dtype=torch.bool), -math.inf).softmax(-1)
    positions = 5.0 * torch.rand(batch, num, 2, generator=g)
    radii = 0.4 + 0.4 * torch.rand(batch, num, generator=g)
    return {
        "attention": attention,
        "positions": positions,
        "pairs": neighbour_mask(positions, radii, tolerance=0.3),
        "queries": torch.rand(batch, num, generator=g) < 0.7,
    }


def make_metrics() -> dict[str, object]:
    grid = default_r_grid(0.6, num=8)
    return {
        "score": CollisionScore(L, H),
        "impact": CollisionScore(L, H),
        "pearson": AttentionDistanceCorrelation(L, H),
        "connected": ConnectedCorrelation(L, H, grid),
        "bands": BandCollisionScore(L, H, BOX_HEIGHT, BANDS),
        "queries": QueryDistance(L, H),
    }


def update_all(metrics: dict, data: dict, part: slice) -> None:
    attention, positions = data["attention"][part], data["positions"][part]
    metrics["score"].update(attention, data["pairs"][part])
    metrics["impact"].update(attention, data["pairs"][part], data["queries"][part])
    metrics["pearson"].update(attention, positions)
    metrics["connected"].update(attention, positions)
    metrics["bands"].update(attention, data["pairs"][part], positions)
    metrics["queries"].update(attention, positions)


def compute_all(metrics: dict) -> dict[str, torch.Tensor]:
    results = {name: metric.compute() for name, metric in metrics.items() if name != "queries"}
    results["connected_pearson"] = metrics["connected"].compute_pearson()
    results["connected_length"] = metrics["connected"].compute_length(CONTACT_INDEX)
    for name, value in metrics["queries"].compute().items():
        results[f"query_{name}"] = value
    return results


def functional_answers(data: dict) -> dict[str, torch.Tensor]:
    attention, positions = data["attention"], data["positions"]
    grid = default_r_grid(0.6, num=8)
    pearson = attention_distance_correlation(attention, positions)
    connected = connected_correlation(attention, positions, grid)
    return {
        "score": collision_score(attention, data["pairs"]),
        "impact": collision_score(attention, data["pairs"], data["queries"]),
        "pearson": pearson,
        "connected": connected,
        "connected_pearson": pearson,
        "connected_length": correlation_length(connected, grid, CONTACT_INDEX),
        "bands": band_collision_score(attention, data["pairs"], positions, BOX_HEIGHT, BANDS),
        "query_mean_distance": mean_attention_distance(attention, positions),
        "query_pearson": query_correlation(attention, positions),
        "query_spearman": query_correlation(attention, positions, method="spearman"),
    }


def test_batch_by_batch_equals_one_functional_call() -> None:
    data = probe_set()
    metrics = make_metrics()
    for part in (slice(0, 3), slice(3, 4), slice(4, 8)):
        update_all(metrics, data, part)
    results = compute_all(metrics)
    expected = functional_answers(data)
    assert set(results) == set(expected)
    for name, value in expected.items():
        assert results[name].dtype == torch.float64
        torch.testing.assert_close(results[name], value, **EXACT, equal_nan=True, msg=name)
    assert results["connected"].shape == (L, H, 8)
    assert results["bands"].shape == (L, H, BANDS)
    for metric in metrics.values():
        for state in metric.metric_state.values():
            assert state.dtype == torch.float64

    # reset forgets everything: one batch afterwards is that batch alone
    for metric in metrics.values():
        metric.reset()
    update_all(metrics, data, slice(0, 3))
    first = functional_answers({key: value[:3] for key, value in data.items()})
    torch.testing.assert_close(metrics["score"].compute(), first["score"], **EXACT)


def test_batches_with_different_particle_counts() -> None:
    # two batches with N = 6 and N = 4: equal to one call on the concatenation, with the
    # smaller scenes padded to N = 6 and marked by `valid`
    big, small = probe_set(1, batch=3), probe_set(2, batch=2, num=4)
    metrics = make_metrics()
    update_all(metrics, big, slice(None))
    update_all(metrics, small, slice(None))

    def pad(x: torch.Tensor, dims: int, fill: float | bool) -> torch.Tensor:
        out = torch.full(x.shape[: x.ndim - dims] + (N,) * dims, fill, dtype=x.dtype)
        out[(...,) + (slice(0, 4),) * dims] = x
        return out

    joined = {
        "attention": torch.cat([big["attention"], pad(small["attention"], 2, math.nan)]),
        "positions": torch.cat([big["positions"], pad(small["positions"].mT, 1, 0.0).mT]),
        "pairs": torch.cat([big["pairs"], pad(small["pairs"], 2, True)]),
        "queries": torch.cat([big["queries"], pad(small["queries"], 1, True)]),
    }
    valid = torch.ones(5, N, dtype=torch.bool)
    valid[3:, 4:] = False
    attention, positions = joined["attention"], joined["positions"]
    torch.testing.assert_close(
        metrics["impact"].compute(),
        collision_score(attention, joined["pairs"], joined["queries"], valid),
        **EXACT,
    )
    torch.testing.assert_close(
        metrics["pearson"].compute(),
        attention_distance_correlation(attention, positions, valid),
        **EXACT,
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        CollisionScore(2, 0)
    with pytest.raises(ValueError, match="num_layers"):
        AttentionDistanceCorrelation(1.5, 2)
    with pytest.raises(ValueError, match="r_grid"):
        ConnectedCorrelation(2, 3, torch.tensor([3.0, 1.0]))
    data = probe_set()
    with pytest.raises(ValueError, match="n_heads"):
        CollisionScore(L, H + 1).update(data["attention"], data["pairs"])
    with pytest.raises(ValueError, match="n_layers"):
        AttentionDistanceCorrelation(L + 1, H).update(data["attention"], data["positions"])
    with pytest.raises(ValueError, match="box_height"):
        BandCollisionScore(L, H, box_height=0.0)
    with pytest.raises(ValueError, match="num_bands"):
        BandCollisionScore(L, H, BOX_HEIGHT, num_bands=0)
    with pytest.raises(ValueError, match="observables"):
        QueryDistance(L, H, observables=("kendall",))
    with pytest.raises(ValueError, match="n_heads"):
        QueryDistance(L, H + 1).update(data["attention"], data["positions"])


# --- real DDP: two CPU processes with gloo -------------------------------------------------------

WORLD_SIZE = 2
# uneven split on purpose: rank 0 gets 5 scenes in two updates, rank 1 gets 3 in one
RANK_PARTS = {0: [slice(0, 2), slice(2, 5)], 1: [slice(5, 8)]}


def ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank: update with its part of the fixed probe set, compute (which all-gathers)."""
    torch.set_num_threads(1)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        data = probe_set()  # every rank builds the same probe set from the seed
        metrics = make_metrics()
        for part in RANK_PARTS[rank]:
            update_all(metrics, data, part)
        torch.save(compute_all(metrics), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(
        ddp_worker,
        args=(str(tmp_path / "rendezvous"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    single = make_metrics()
    update_all(single, probe_set(), slice(None))
    expected = compute_all(single)
    for rank in range(WORLD_SIZE):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(results) == set(expected)
        for name, value in expected.items():
            # the spec's bound is 1e-6; with float64 sums only the grouping of the additions
            # differs (per rank, then summed), so the answer agrees to ~1e-15: assert 1e-12
            assert torch.equal(results[name].isnan(), value.isnan()), (rank, name)
            difference = (results[name] - value).nan_to_num().abs().max().item()
            assert difference <= 1e-12, (rank, name, difference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda() -> None:
    data = probe_set()
    metrics = {name: metric.to("cuda") for name, metric in make_metrics().items()}
    cuda_data = {key: value.cuda() for key, value in data.items()}
    for part in (slice(0, 3), slice(3, 8)):
        update_all(metrics, cuda_data, part)
    expected = functional_answers(data)
    for name, value in compute_all(metrics).items():
        assert value.device.type == "cuda"
        torch.testing.assert_close(value.cpu(), expected[name], **EXACT, msg=name)
