"""LLCMonitor: histories for the whole model and every head, no perturbation, DDP split."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_rows, run_single_and_ddp, tiny_config, train

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
