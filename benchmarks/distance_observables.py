"""How much each attention-distance observable says beyond the collision score, on finished runs.

    python benchmarks/distance_observables.py RUN_DIR [RUN_DIR ...]

For every distance observable of ``emergence/attention_distance.csv`` (``g_contact``,
``pearson`` and the observables that are not functions of the score: ``mean_distance``,
``query_pearson``, ``query_spearman``, ``corr_length``) prints, per run:

* ``R^2 vs score``: the squared Pearson correlation of the observable with the collision
  score (``collision_scores.csv``) over every (step, head) row where both are defined, i.e.
  the fraction of the observable's variance that a straight line in the score explains
  (``g_contact`` is exactly affine in the score on a fixed probe set: R^2 = 1);
* ``AUC true/none``: at the last measured step, the probability that a true collision head
  (``head_class`` true) is more collision-like on the observable than a head of class none
  (ties count half), with "more collision-like" the observable's direction
  (``lit_emergence.records.schema.OBSERVABLES``: lower mean distance, more negative
  correlations, shorter length); 1 separates perfectly, 0.5 not at all. Heads where the
  observable is undefined are left out (their number is printed);
* the medians of the true and of the none heads at the last step;
* ``half-way step``: for the heads that end true, the first measured step at which the
  observable has made half of its change from its initial level (median of the first three
  measurements) to its last value, median over those heads (the score's own is printed in the
  heading): whether the observable moves with the emergence or at another time (the pooled
  Pearson r settles during the warm-up, long before the scores rise).

Only numpy and the run's CSV files are used (the Mann-Whitney form of the AUC, by counting
pairs), so the numbers can be checked by hand.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from lit_emergence.records.csv import read_rows
from lit_emergence.records.schema import (
    COLLISION,
    DISTANCE,
    DISTANCE_OBSERVABLES,
    OBSERVABLE_BY_NAME,
)

#: The observables compared, the two that were there first, then the new ones.
COMPARED: tuple[str, ...] = ("g_contact", "pearson", *DISTANCE_OBSERVABLES)


def _value(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def joined_rows(run_dir: Path) -> dict[str, np.ndarray]:
    """Step, score, head class and every compared observable, one entry per (step, head)."""
    scores = {
        (int(r["step"]), int(r["layer"]), int(r["head"])): r
        for r in read_rows(COLLISION.path(run_dir)).rows
    }
    distance = read_rows(DISTANCE.path(run_dir))
    missing = [name for name in COMPARED if name not in distance.fieldnames]
    if missing:
        raise SystemExit(f"{DISTANCE.path(run_dir)} lacks the columns {missing}")
    columns: dict[str, list] = {"step": [], "layer": [], "head": [], "score": [], "head_class": []}
    columns.update({name: [] for name in COMPARED})
    for row in distance.rows:
        key = (int(row["step"]), int(row["layer"]), int(row["head"]))
        if key not in scores:
            continue
        columns["step"].append(key[0])
        columns["layer"].append(key[1])
        columns["head"].append(key[2])
        columns["score"].append(_value(scores[key]["score"]))
        columns["head_class"].append(scores[key]["head_class"])
        for name in COMPARED:
            columns[name].append(_value(row[name]))
    if not columns["step"]:
        raise SystemExit(f"{run_dir}: no (step, head) measured by both monitors")
    return {key: np.asarray(values) for key, values in columns.items()}


def r_squared(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Squared Pearson correlation over the rows where both are finite, and their number."""
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return math.nan, int(both.sum())
    return float(np.corrcoef(x[both], y[both])[0, 1] ** 2), int(both.sum())


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive exceeds a negative) + P(tie) / 2, by counting every pair."""
    if positive.size == 0 or negative.size == 0:
        return math.nan
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (positive.size * negative.size))


def half_way_step(steps: np.ndarray, values: np.ndarray, baseline_points: int = 3) -> float:
    """First step at which a series has made half its change from its start to its end."""
    defined = np.isfinite(values)
    steps, values = steps[defined], values[defined]
    if values.size <= baseline_points:
        return math.nan
    start, end = np.median(values[:baseline_points]), values[-1]
    if end == start:
        return math.nan
    progress = (values - start) / (end - start)
    return float(steps[np.argmax(progress >= 0.5)])


def table(run_dir: Path) -> list[str]:
    """Markdown table of one run."""
    data = joined_rows(run_dir)
    last = data["step"] == data["step"].max()
    classes = data["head_class"][last]
    true_heads = [
        (layer, head)
        for layer, head, kind in zip(data["layer"][last], data["head"][last], classes, strict=True)
        if kind == "true"
    ]

    def half_way(name: str) -> float:
        found = []
        for layer, head in true_heads:
            rows = (data["layer"] == layer) & (data["head"] == head)
            found.append(half_way_step(data["step"][rows], data[name][rows]))
        return float(np.nanmedian(found)) if found else math.nan

    lines = [
        f"{run_dir} (last step {int(data['step'].max())}: {int((classes == 'true').sum())} true, "
        f"{int((classes == 'none').sum())} none heads; {last.size} rows; the true heads' score "
        f"is half-way at step {half_way('score'):.0f})",
        "",
        "| observable | R^2 vs score (rows) | AUC true/none (undefined heads) | "
        "median true | median none | half-way step (true heads) |",
        "|---|---|---|---|---|---|",
    ]
    for name in COMPARED:
        values = data[name]
        r2, rows = r_squared(values, data["score"])
        final = values[last]
        sign = OBSERVABLE_BY_NAME[name].sign
        true, none = final[classes == "true"], final[classes == "none"]
        undefined = int((~np.isfinite(true)).sum() + (~np.isfinite(none)).sum())
        true, none = true[np.isfinite(true)], none[np.isfinite(none)]
        separation = auc(sign * true, sign * none)
        lines.append(
            f"| `{name}` | {r2:.3f} ({rows}) | {separation:.3f} ({undefined}) | "
            f"{np.median(true) if true.size else math.nan:.3f} | "
            f"{np.median(none) if none.size else math.nan:.3f} | {half_way(name):.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (RUN_DIR)")
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        print("\n".join(table(run_dir)), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
