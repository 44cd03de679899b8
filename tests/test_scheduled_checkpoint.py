"""ScheduledCheckpoint: checkpoints at log-spaced steps, written once, loadable."""

from __future__ import annotations

import torch
from conftest import train
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_emergence.callbacks import ScheduledCheckpoint
from lit_emergence.records.schema import scheduled_checkpoint_step


def test_checkpoints_at_the_schedule_hold_that_steps_weights(tmp_path):
    module, _ = train(tmp_path, [ScheduledCheckpoint(lambda step: step % 4 == 0)], steps=12)
    folder = tmp_path / "run" / "checkpoints"
    steps = sorted(scheduled_checkpoint_step(p) for p in folder.glob("step-*.ckpt"))
    assert steps == [0, 4, 8, 12]
    last = torch.load(folder / "step-0000012.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in last  # weights only by default
    for name, value in module.state_dict().items():
        torch.testing.assert_close(last["state_dict"][name], value, atol=0, rtol=0)
    first = torch.load(folder / "step-0000000.ckpt", map_location="cpu", weights_only=True)
    assert any(
        not torch.equal(first["state_dict"][name], value)
        for name, value in module.state_dict().items()
    )


def test_a_resumed_run_does_not_rewrite_scheduled_checkpoints(tmp_path):
    callbacks = [ScheduledCheckpoint(), ModelCheckpoint(save_last=True, every_n_train_steps=5)]
    train(tmp_path, callbacks, steps=5)
    assert ScheduledCheckpoint().schedule(5) and ScheduledCheckpoint().schedule(8)
    folder = tmp_path / "run" / "checkpoints"
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("step-*.ckpt")}
    assert "step-0000005.ckpt" in written
    callbacks = [ScheduledCheckpoint(), ModelCheckpoint(save_last=True, every_n_train_steps=5)]
    train(tmp_path, callbacks, steps=8, ckpt_path=folder / "last.ckpt")
    again = {p.name: p.stat().st_mtime_ns for p in folder.glob("step-*.ckpt")}
    assert {k: again[k] for k in written} == written
    assert "step-0000008.ckpt" in again
    assert scheduled_checkpoint_step(folder / "last.ckpt") is None
