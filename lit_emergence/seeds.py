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

The seeds' W&B runs and the report's (``job_type`` report, in the fits' W&B mode) form one W&B
group (``--wandb_group``; by default the run root's name and a short hash of its path, the same
on every re-run), each fit tagged ``seed:<n>``. At the end one table over the seeds (true and
partial heads, best score, LLC, losses, from each run's ``summary.json``) is printed and
written to ``RUN_ROOT/summary.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from lit_emergence.cli_args import OneLineErrorParser, fail, non_negative_int

PROGRAM = "lit-emergence seeds"
STATUS_FILE = "seeds.csv"
STATUS_FIELDS = ("seed", "run_dir", "status", "returncode", "wall_seconds", "finished_at")


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    """Return the argument parser of ``lit-emergence seeds`` (``prog``: its usage line's name)."""
    parser = OneLineErrorParser(
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
        "--seeds",
        type=non_negative_int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="seeds (default 0-4)",
    )
    parser.add_argument(
        "--run_root",
        default=None,
        help="directory holding one run per seed and the report (default runs/<config name>)",
    )
    parser.add_argument("--no_report", action="store_true", help="train only, no report")
    parser.add_argument(
        "--wandb_group",
        default=None,
        help="W&B group of the seeds' runs and the report (default: the run root's name and "
        "a hash of its path)",
    )
    return parser


def default_group(run_root: Path) -> str:
    """The W&B group of a run root: its name and a short hash of its absolute path.

    The same on every re-run of ``seeds`` in that run root (a resumed experiment stays one
    group), different for two run roots of the same name (two experiments never mix).
    """
    digest = hashlib.sha1(str(run_root.resolve()).encode()).hexdigest()[:6]
    return f"{run_root.resolve().name}-{digest}"


def wandb_mode(config: Path, extra: Sequence[str]) -> str:
    """The seeds' W&B mode: ``--wandb`` after ``--``, else the config's, else offline."""
    for index, arg in enumerate(extra):
        if arg == "--wandb" and index + 1 < len(extra):
            return extra[index + 1]
        if arg.startswith("--wandb="):
            return arg.split("=", 1)[1]
    import yaml

    try:
        settings = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        settings = {}
    mode = settings.get("wandb", "offline") if isinstance(settings, dict) else "offline"
    return str(mode)


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block (the report's W&B run reads the group)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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


def fit_command(
    config: Path, seed: int, run_dir: Path, extra: Sequence[str], group: str | None = None
) -> list[str]:
    """The ``fit`` command line for one seed: resume from ``last.ckpt`` when there is one.

    Args:
        config: The training config.
        seed: The seed.
        run_dir: The seed's run directory.
        extra: Arguments for ``fit`` from the command line (they come last, so they win).
        group: The W&B group, or None for ``fit``'s default.
    """
    command = [sys.executable, "-m", "lit_emergence", "fit"]
    if group is not None:
        extra = ["--wandb_group", group, *extra]
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
        fail(prog, f"--config {config}: no such file")
    if len(set(args.seeds)) != len(args.seeds):
        fail(prog, f"--seeds must be distinct, got {args.seeds}")
    run_root = Path(args.run_root or Path("runs") / config.stem)
    run_root.mkdir(parents=True, exist_ok=True)

    group = args.wandb_group or default_group(run_root)
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
        command = fit_command(config, seed, run_dir, extra, group)
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

        report_args = [*map(str, run_dirs), "--out", str(run_root / "report")]
        mode = wandb_mode(config, extra)
        if mode != "disabled":  # the report's W&B run joins the seeds' group
            report_args += ["--wandb", mode]
        with _environment("WANDB_RUN_GROUP", group):
            report_status = report_main(report_args)
        if report_status != 0:
            return report_status
    _print_seeds_table(
        run_root, [(seed, run_root / f"{config.stem}-seed{seed}") for seed in args.seeds]
    )
    if failed:
        sys.stderr.write(f"{PROGRAM}: seeds {failed} failed (see {run_root / STATUS_FILE})\n")
        return 1
    return 0


def _print_seeds_table(run_root: Path, runs: list[tuple[int, Path]]) -> None:
    """Print one table over the seeds and write it to ``RUN_ROOT/summary.md``."""
    from lit_emergence.records.files import replace_text
    from lit_emergence.records.schema import SUMMARY_FILE
    from lit_emergence.records.summary import seeds_table

    table = seeds_table(runs)
    text = f"# {run_root.name}: {len(runs)} seeds\n\n{table}"
    replace_text(run_root / SUMMARY_FILE, text)
    print(f"\n[{PROGRAM}] {len(runs)} seeds ({run_root / SUMMARY_FILE}):\n\n{table}", flush=True)
