"""Start-up time of ``--help`` of every ``lit-emergence`` command, against ``python -c pass``.

    python benchmarks/cli_help.py [--repeats 5] [--baseline DIR]

Times, in fresh processes, ``python -c pass`` and ``python -m lit_emergence [COMMAND] --help``
for the top level and every command (``fit``, ``validate``, ``test``, ``predict`` and those of
``lit_emergence.cli.EXTRA_COMMANDS``: ``report``, ``seeds``), the commands interleaved so that
a change in the machine's load hits them all alike. With ``--baseline DIR`` (a folder holding
another copy of the ``lit_emergence`` package, e.g. the code before a change copied aside)
each command also runs from that copy, side by side in the same loop, and the table gets a
before/after ratio.

Help texts that are cached (see ``lit_emergence/cli_help.py``) are measured warm: one untimed
call fills a fresh, temporary cache first, and its time is reported as "cold". Every child runs
in an empty temporary working directory, so ``python -m`` imports the copy under test, never a
``lit_emergence`` folder in the current directory. Prints a Markdown table of medians and their
ratios to ``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lit_emergence.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every command the CLI knows: the top level, LightningCLI's four, and the extra commands.
COMMANDS = ((), *((name,) for name in (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS)))


def _run(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall time of one child process; it must exit 0."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed


def _environment(package_parent: Path, cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(package_parent), env.get("PYTHONPATH")) if p
    )
    env["LIT_EMERGENCE_CACHE_DIR"] = cache_dir
    env.pop("LIT_EMERGENCE_NO_HELP_CACHE", None)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (median)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="folder holding another copy of the lit_emergence package, timed side by side",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.baseline is not None and not (args.baseline / "lit_emergence").is_dir():
        parser.error(f"--baseline {args.baseline}: no lit_emergence package in it")

    versions = {"after": REPO_ROOT}
    if args.baseline is not None:
        versions = {"before": args.baseline.resolve(), **versions}
    python = sys.executable
    with tempfile.TemporaryDirectory() as workdir:
        envs = {
            name: _environment(parent, str(Path(workdir) / f"cache-{name}"))
            for name, parent in versions.items()
        }
        commands = {c: [python, "-m", "lit_emergence", *c, "--help"] for c in COMMANDS}
        # Untimed first call of each: fills the help cache (its time is the cold start).
        cold = {
            (name, c): _run(argv, envs[name], workdir)
            for c, argv in commands.items()
            for name in versions
        }
        baseline: list[float] = []
        times: dict[tuple[str, tuple[str, ...]], list[float]] = {key: [] for key in cold}
        for _ in range(args.repeats):
            baseline.append(_run([python, "-c", "pass"], dict(os.environ), workdir))
            for c, argv in commands.items():
                for name in versions:
                    times[name, c].append(_run(argv, envs[name], workdir))

    base = statistics.median(baseline)
    print(f"python -c pass: {base * 1000:.0f} ms (median of {args.repeats}); {os.cpu_count()} CPUs")
    header = ["command"]
    for name in versions:
        header += [f"{name} (s)", f"{name} / pass"]
    header += ["after, cold (s)"]
    if "before" in versions:
        header += ["before / after"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for c in COMMANDS:
        label = " ".join(["lit-emergence", *c, "--help"])
        row = [f"`{label}`"]
        medians = {name: statistics.median(times[name, c]) for name in versions}
        for name in versions:
            row += [f"{medians[name]:.2f}", f"{medians[name] / base:.0f}×"]
        row += [f"{cold['after', c]:.2f}"]
        if "before" in versions:
            row += [f"{medians['before'] / medians['after']:.1f}×"]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
