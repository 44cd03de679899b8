"""Run the README's main job and check what it promises.

    python benchmarks/quickstart.py [--config CONFIG] [--run_dir DIR] [extra CLI flags]

Runs ``lit-emergence fit --config configs/quickstart.yaml`` as a user would (a subprocess,
W&B offline), then reads the run's ``csv/metrics.csv`` and prints:

* wall time of the whole command (data generation included) against the 10-minute budget;
* the first logged training loss, the last one and the mean of the last ten, and the fall
  factor first / last (the promise: at least 10x);
* the validation one-step loss and rollout position errors at every validation;
* emergence: every head's collision-detection score at step 0 and at the end (all three
  variants, as [layer x head] tables), the best head's attention-distance correlation and G at
  contact distance at step 0 and at the end, and a figure of the best head's curves
  (``RUN_DIR/emergence_curves.png``).

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
MAX_START_SCORE = 0.3
MIN_END_SCORE = 0.9


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in rows if row.get(key)]


def head_table(rows: list[dict[str, str]], column: str) -> str:
    layers = 1 + max(int(r["layer"]) for r in rows)
    heads = 1 + max(int(r["head"]) for r in rows)
    grid = [["" for _ in range(heads)] for _ in range(layers)]
    for row in rows:
        value = row[column]
        grid[int(row["layer"])][int(row["head"])] = f"{float(value):.3f}" if value else "  -  "
    lines = ["layer | " + " ".join(f"  H{h}  " for h in range(heads))]
    lines += [f"  L{i}  | " + " ".join(f"{v:>6}" for v in grid[i]) for i in range(layers)]
    return "\n".join(lines)


def report_emergence(run_dir: Path) -> list[str]:
    """Print the collision-score tables and the best head's curves; return broken promises."""
    path = run_dir / "emergence" / "collision_scores.csv"
    if not path.exists():
        return ["no emergence/collision_scores.csv (are the monitors in the config?)"]
    with path.open() as handle:
        collision = list(csv.DictReader(handle))
    with (run_dir / "emergence" / "attention_distance.csv").open() as handle:
        distance = list(csv.DictReader(handle))
    steps = sorted({int(r["step"]) for r in collision})
    first = [r for r in collision if int(r["step"]) == steps[0]]
    last = [r for r in collision if int(r["step"]) == steps[-1]]
    for column in ("score", "strict", "impact"):
        print(f"\ncollision {column} at step {steps[-1]}:\n{head_table(last, column)}")
    start_max = max(float(r["score"]) for r in first)
    best = max(last, key=lambda r: float(r["score"]))
    key = (best["layer"], best["head"])
    print(
        f"\nstep 0: every head's score <= {start_max:.3f}; "
        f"best head at the end L{key[0]}H{key[1]}: "
        f"score {float(best['score']):.3f}, strict {float(best['strict']):.3f}, "
        f"impact {float(best['impact']):.3f}"
    )
    curve = [r for r in distance if (r["layer"], r["head"]) == key]
    for column in ("pearson", "g_contact"):
        print(
            f"best head {column}: step {curve[0]['step']}: {float(curve[0][column]):+.4f} -> "
            f"step {curve[-1]['step']}: {float(curve[-1][column]):+.4f}"
        )
    plot_best_head(run_dir, collision, curve, key)
    failures = []
    if start_max >= MAX_START_SCORE:
        failures.append(f"a head starts at {start_max:.3f} >= {MAX_START_SCORE}")
    if float(best["score"]) < MIN_END_SCORE:
        failures.append(f"best final score {float(best['score']):.3f} < {MIN_END_SCORE}")
    return failures


def plot_best_head(run_dir: Path, collision: list, curve: list, key: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = [r for r in collision if (r["layer"], r["head"]) == key]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for column, style in (("score", "-"), ("strict", "--"), ("impact", ":")):
        axes[0].plot(
            [max(int(r["step"]), 1) for r in head],
            [float(r[column]) for r in head],
            style,
            label=column,
        )
    axes[0].set(
        xscale="log",
        xlabel="step (0 drawn at 1)",
        ylabel="collision score",
        title=f"L{key[0]}H{key[1]}: collision-detection score",
    )
    axes[0].legend()
    for ax, column in zip(axes[1:], ("pearson", "g_contact"), strict=True):
        values = [float(r[column]) for r in curve]
        departure = [abs(v - values[0]) for v in values]
        ax.plot([int(r["step"]) for r in curve][1:], departure[1:], "o-", markersize=3)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="step",
            title=f"|{column}(t) - {column}(0)|\n({values[0]:+.3f} -> {values[-1]:+.3f})",
        )
    fig.tight_layout()
    fig.savefig(run_dir / "emergence_curves.png", dpi=110)
    plt.close(fig)
    print(f"figure: {run_dir / 'emergence_curves.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--run_dir", default=None)
    args, extra = parser.parse_known_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="quickstart-")) / "run"
    command = [
        sys.executable,
        "-m",
        "lit_emergence",
        "fit",
        "--config",
        args.config,
        "--run_dir",
        str(run_dir),
        "--trainer.enable_progress_bar=false",
        *extra,
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

    failures = report_emergence(run_dir)
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
