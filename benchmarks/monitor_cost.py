"""Cost of one measurement of the attention-structure monitors, on a run's model and probe set.

    python benchmarks/monitor_cost.py RUN_DIR [--repeats 20] [--threads N]

Loads ``RUN_DIR/checkpoints/last.ckpt`` and the probe set the collision monitor saved
(``RUN_DIR/emergence/probe_collision_scores.pt``), then times ``measure`` of a
``CollisionDetectionMonitor`` and an ``AttentionDistanceMonitor`` with their default settings
(the box from ``RUN_DIR/config.yaml``), as during training: one shared forward pass per probe
chunk, then both monitors' statistics. Each repeat is a new step, so nothing is cached across
repeats. Prints the median and the spread of the time of one measurement of both monitors,
as wall time and as CPU time of the process (all threads), which other work on a busy machine
inflates much less.

Unlike ``callback_overhead.py`` (two full trainings, whose difference is a few percent of
their wall time), this isolates the monitors' own cost, so a change of their code can be
compared on a machine whose load varies: run it for both versions one after the other, and
multiply the difference by the number of scheduled measurements (81 for the quickstart's
20 points per decade up to 10 000 steps) to get the added seconds per run.
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import time
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Trainer

from lit_emergence.callbacks import AttentionDistanceMonitor, CollisionDetectionMonitor
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.module import LearnedSimulator


def monitors(box_width: float, box_height: float) -> list:
    """The two monitors with their defaults, given the box as the datamodule would."""
    settings = {
        CollisionDetectionMonitor: {"box_height": box_height},
        AttentionDistanceMonitor: {"max_distance": math.hypot(box_width, box_height)},
    }
    made = []
    for kind, options in settings.items():
        accepted = inspect.signature(kind).parameters  # older versions lack these arguments
        made.append(kind(**{k: v for k, v in options.items() if k in accepted}))
    made[0].gravity, made[0].frame_interval = 1.0, 0.075  # as the quickstart's simulation
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    simulation = config["data"]["simulation"]
    module = LearnedSimulator.load_from_checkpoint(
        args.run_dir / "checkpoints" / "last.ckpt", map_location="cpu"
    ).eval()
    probe = ProbeSet(
        torch.load(
            args.run_dir / "emergence" / "probe_collision_scores.pt",
            map_location="cpu",
            weights_only=True,
        )
    )
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    watching = monitors(simulation.get("box_width", 11.0), simulation.get("box_height", 24.0))
    wall, cpu = [], []
    with torch.no_grad():
        for step in range(1, args.repeats + 2):
            start, start_cpu = time.perf_counter(), time.process_time()
            for monitor in watching:
                monitor.measure(trainer, module, probe, step)
            if step > 1:  # the first one warms up
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    print(
        f"one measurement of both monitors ({probe.num_samples} probe samples, "
        f"{torch.get_num_threads()} threads, {len(wall)} repeats):"
    )
    for label, times in (("wall", wall), ("cpu ", cpu)):
        print(
            f"  {label} median {1000 * statistics.median(times):7.1f} ms "
            f"(min {1000 * min(times):7.1f}, max {1000 * max(times):7.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
