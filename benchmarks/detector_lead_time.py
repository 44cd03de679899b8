"""Lead time of the EmergenceDetector on finished (or running) runs, by replaying their histories.

    python benchmarks/detector_lead_time.py RUN_DIR [RUN_DIR ...] [--observable score|pearson]

For each run, replays ``emergence/collision_scores.csv`` (and ``attention_distance.csv``)
through the detector exactly as it runs live (a replay gives the live events: see
``tests/test_detection.py::test_incremental_feeding_equals_replay``), then prints every event
and, for each head that reached the true threshold, the step at which each warning event was
flagged and the lead time: the true step minus the earliest flagged warning. A summary line
gives how many heads each warning flagged and how many of them became partial / true heads.
A run still training is read up to its last complete row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_emergence.detection import (
    WARNING_EVENTS,
    DetectionSettings,
    EmergenceEvent,
    detect_events,
    lead_times,
)
from lit_emergence.records.csv import read_rows


def replay_run(run_dir: Path, settings: DetectionSettings) -> tuple[list[EmergenceEvent], int]:
    emergence = run_dir / "emergence"
    collision = read_rows(emergence / "collision_scores.csv").rows
    if not collision:
        raise SystemExit(f"{emergence / 'collision_scores.csv'} is missing or empty")
    distance = read_rows(emergence / "attention_distance.csv").rows
    events = detect_events(collision, distance or None, settings)
    return events, max(int(row["step"]) for row in collision)


def report(run_dir: Path, settings: DetectionSettings) -> None:
    events, last_step = replay_run(run_dir, settings)
    print(f"\n== {run_dir} (histories up to step {last_step})")
    print(f"{'head':>5} {'event':>9} {'flagged':>8} {'at step':>8}  detail")
    for event in events:
        print(
            f"{event.head_name:>5} {event.event:>9} {event.step:>8} {event.event_step:>8}  "
            f"{event.detail}"
        )
    leads = lead_times(events)
    print("\nheads that reached the true threshold (steps; lead = true step - flagged warning):")
    header = "".join(f" {name + ' flagged':>17}" for name in WARNING_EVENTS)
    print(f"{'head':>5} {'true at':>8}{header} {'earliest':>10} {'lead':>6}")
    for lead in leads:
        flagged = "".join(f" {lead.warnings.get(name, '-')!s:>17}" for name in WARNING_EVENTS)
        print(
            f"L{lead.layer}H{lead.head}".rjust(5)
            + f" {lead.true_step:>8}{flagged} {lead.earliest_warning or '-':>10} "
            f"{lead.lead_steps if lead.lead_steps is not None else '-':>6}"
        )
    developed = {(e.layer, e.head) for e in events if e.event in ("partial", "true")}
    true_heads = {(e.layer, e.head) for e in events if e.event == "true"}
    for name in ("onset", "power_law"):
        flagged = {(e.layer, e.head) for e in events if e.event == name}
        in_time = sum(lead.lead_of(name) is not None and lead.lead_of(name) > 0 for lead in leads)
        print(
            f"{name}: {len(flagged)} heads flagged, {len(flagged & developed)} of them became "
            f"partial or true, {len(flagged & true_heads)} true; it flagged {in_time} of the "
            f"{len(true_heads)} true heads before they reached the true threshold"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--observable", choices=("score", "pearson"), default="score")
    parser.add_argument("--time_axis", choices=("lr_integral", "step"), default="lr_integral")
    args = parser.parse_args()
    settings = DetectionSettings(power_law_observable=args.observable, time_axis=args.time_axis)
    print(f"settings: {settings}")
    for run_dir in args.run_dirs:
        report(run_dir, settings)


if __name__ == "__main__":
    main()
