"""``lit-emergence seeds``: train one config under several seeds, then report over them.

    lit-emergence seeds --config configs/paper.yaml --seeds 0 1 2 3 4 --run_root runs/paper

trains ``runs/paper/paper-seed0`` ... ``paper-seed4`` one after the other (each run is an ordinary
``lit-emergence fit`` in its own process, so a config asking for several GPUs runs DDP as usual)
and then writes ``lit-emergence report`` over all of them into ``runs/paper/report``.

The command can be re-run after an interruption and picks up where it stopped: a seed recorded as
finished in ``RUN_ROOT/seeds.csv`` is skipped, a seed whose run directory holds
``checkpoints/last.ckpt`` resumes from it (its histories continue exactly, see
``docs/callbacks.md``), any other seed starts from scratch. A bad setting stops the command at
the first seed with ``fit``'s one-line error, before any simulation or training. Arguments
after ``--`` go to every ``fit`` (e.g. ``-- --trainer.max_steps 50000 --wandb disabled``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

PROGRAM = "lit-emergence seeds"
STATUS_FILE = "seeds.csv"
STATUS_FIELDS = ("seed", "run_dir", "status", "returncode", "wall_seconds", "finished_at")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit status 2 (argparse's usage block is noise here)."""
        sys.stderr.write(f"{PROGRAM}: error: {message}\n")
        raise SystemExit(2)


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    """Return the argument parser of ``lit-emergence seeds`` (``prog``: its usage line's name)."""
    parser = _Parser(
        prog=prog,
        # Written out line by line: argparse's wrapping would split options at their dashes.
        description="Train one config under several seeds (one run directory each), then\n"
        "write a report over all of them. Re-running resumes unfinished seeds.",
        epilog="Arguments after '--' are passed to every 'lit-emergence fit'; for short runs:\n"
        f"  {prog} --config CONFIG -- --trainer.max_steps 2000 --wandb disabled",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0-4)"
    )
    parser.add_argument(
        "--run_root",
        default=None,
        help="directory holding one run per seed and the report (default runs/<config name>)",
    )
    parser.add_argument("--no_report", action="store_true", help="train only, no report")
    return parser


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"{PROGRAM}: error: {message}\n")
    raise SystemExit(2)


def read_status(run_root: Path) -> dict[int, dict[str, str]]:
    """Return the last recorded status row of each seed in ``RUN_ROOT/seeds.csv``."""
    path = run_root / STATUS_FILE
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {int(row["seed"]): row for row in csv.DictReader(handle)}


def _append_status(run_root: Path, row: dict[str, object]) -> None:
    path = run_root / STATUS_FILE
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=STATUS_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def fit_command(config: Path, seed: int, run_dir: Path, extra: Sequence[str]) -> list[str]:
    """The ``fit`` command line for one seed: resume from ``last.ckpt`` when there is one."""
    command = [sys.executable, "-m", "lit_emergence", "fit"]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists() and (run_dir / "config.yaml").exists():
        # The run's own resolved config: the same settings it started with, seed included.
        return [
            *command,
            "--config",
            str(run_dir / "config.yaml"),
            "--run_dir",
            str(run_dir),
            "--ckpt_path",
            str(last),
            *extra,
        ]
    return [
        *command,
        "--config",
        str(config),
        "--seed_everything",
        str(seed),
        "--run_dir",
        str(run_dir),
        *extra,
    ]


def main(argv: Sequence[str] | None = None, prog: str = PROGRAM) -> int:
    """Run ``lit-emergence seeds``; returns the exit status (1 if any seed failed).

    Args:
        argv: The arguments after ``seeds``; None reads ``sys.argv``.
        prog: The program name the usage line shows (``python -m lit_emergence seeds``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser(prog).parse_args(argv)
    config = Path(args.config)
    if not config.is_file():
        _fail(f"--config {config}: no such file")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        _fail(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    run_root = Path(args.run_root or Path("runs") / config.stem)
    run_root.mkdir(parents=True, exist_ok=True)

    status = read_status(run_root)
    run_dirs: list[Path] = []
    failed: list[int] = []
    for index, seed in enumerate(args.seeds):
        run_dir = run_root / f"{config.stem}-seed{seed}"
        header = f"[{PROGRAM}] seed {seed} ({index + 1}/{len(args.seeds)}) -> {run_dir}"
        if status.get(seed, {}).get("status") == "finished" and run_dir.exists():
            print(f"{header}: finished earlier, skipped", flush=True)
            run_dirs.append(run_dir)
            continue
        command = fit_command(config, seed, run_dir, extra)
        resuming = "--ckpt_path" in command
        print(f"{header}: {'resuming' if resuming else 'training'}", flush=True)
        start = time.perf_counter()
        returncode = subprocess.run(command).returncode
        finished = returncode == 0
        _append_status(
            run_root,
            {
                "seed": seed,
                "run_dir": str(run_dir),
                "status": "finished" if finished else "failed",
                "returncode": returncode,
                "wall_seconds": round(time.perf_counter() - start, 1),
                "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
            },
        )
        if finished:
            run_dirs.append(run_dir)
        elif returncode == 2:
            # A usage error (bad setting): every other seed would fail the same way.
            return 2
        else:
            failed.append(seed)
            print(f"{header}: FAILED with exit status {returncode}", file=sys.stderr, flush=True)

    if run_dirs and not args.no_report:
        from lit_emergence.report.cli import main as report_main

        report_status = report_main([*map(str, run_dirs), "--out", str(run_root / "report")])
        if report_status != 0:
            return report_status
    if failed:
        sys.stderr.write(f"{PROGRAM}: seeds {failed} failed (see {run_root / STATUS_FILE})\n")
        return 1
    return 0
