"""Run the README's main job and check what it promises.

    python benchmarks/quickstart.py [--config CONFIG] [--run_dir DIR] [extra CLI flags]

Runs ``lit-emergence fit --config configs/quickstart.yaml`` as a user would (a subprocess,
W&B offline), then reads the run's ``csv/metrics.csv`` and prints:

* wall time of the whole command (data generation included) against the 10-minute budget;
* the first logged training loss, the last one and the mean of the last ten, and the fall
  factor first / last (the promise: at least 10x);
* the validation one-step loss and rollout position errors at every validation.

Exits non-zero if a promise is broken.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 600.0
MIN_LOSS_FALL = 10.0


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in rows if row.get(key)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--run_dir", default=None)
    args, extra = parser.parse_known_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="quickstart-")) / "run"
    command = [
        sys.executable, "-m", "lit_emergence", "fit", "--config", args.config,
        "--run_dir", str(run_dir), "--trainer.enable_progress_bar=false", *extra,
    ]
    print("command:", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, "WANDB_SILENT": "true"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"FAILED: the quickstart exited with {result.returncode}")
        return 1

    rows = read_metrics(run_dir)
    train = series(rows, "train/loss")
    first_step, first = train[0]
    last_step, last = train[-1]
    tail = [loss for _, loss in train[-10:]]
    tail_mean = sum(tail) / len(tail)
    fall = first / last
    print(f"run directory: {run_dir}")
    print(f"wall time: {wall:.0f} s (budget {BUDGET_SECONDS:.0f} s) on {os.cpu_count()} cores")
    print(
        f"train/loss: first logged {first:.4f} (step {first_step}), last {last:.4f} "
        f"(step {last_step}), mean of last 10 {tail_mean:.4f}; "
        f"fall first/last {fall:.1f}x, first/mean-of-last-10 {first / tail_mean:.1f}x"
    )
    keys = sorted({key for row in rows for key in row if key.startswith("val/")})
    for key in keys:
        values = ", ".join(f"{step}: {value:.4f}" for step, value in series(rows, key))
        print(f"{key}: {values}")

    failures = []
    if wall > BUDGET_SECONDS:
        failures.append(f"wall time {wall:.0f} s > {BUDGET_SECONDS:.0f} s")
    if fall < MIN_LOSS_FALL:
        failures.append(f"training loss fell only {fall:.1f}x (< {MIN_LOSS_FALL:.0f}x)")
    if not any(key.startswith("val/rollout_rmse") for key in keys):
        failures.append("no rollout error logged")
    for failure in failures:
        print("FAILED:", failure)
    if not failures:
        print("OK: all quickstart promises hold")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
