"""``lit-emergence report RUN_DIR [RUN_DIR ...]``: figures and tables from finished runs.

Reads only what ``lit-emergence fit`` left in each run directory (histories, config,
checkpoint); needs neither W&B nor a live training process. Exit status: 0 when the report was
written (items that could not be computed are listed in it and warned about), 1 when it was
written but the requested W&B upload failed, 2 on bad arguments or when no path is a usable
run, with one ``lit-emergence report: error: ...`` line.

Options are spelled with underscores, like ``fit``'s; the dashed spellings of earlier versions
(:data:`RENAMED`) still work until the next release, each with a one-line note on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lit_emergence.cli_aliases import replace_deprecated
from lit_emergence.cli_args import OneLineErrorParser, non_negative_int, positive_int

PROGRAM = "lit-emergence report"
#: Old (dashed) option spellings -> the underscore spellings that replace them.
RENAMED = {
    "--time-axis": "--time_axis",
    "--figure1-heads": "--figure1_heads",
    "--no-checkpoint": "--no_checkpoint",
    "--rebuild-probe": "--rebuild_probe",
    "--wandb-project": "--wandb_project",
}


def _error(message: str) -> NoReturn:
    sys.stderr.write(f"{PROGRAM}: error: {message}\n")
    raise SystemExit(2)


def _warn(message: str) -> None:
    from tqdm.auto import tqdm

    # Through tqdm, so that a warning does not break a progress bar drawn at the same time.
    tqdm.write(f"{PROGRAM}: warning: {message}", file=sys.stderr)


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    """The ``report`` command's argument parser (``prog``: the name its usage line shows)."""
    # The choices and defaults the help shows; everything else is imported after parsing.
    from lit_emergence.records.schema import OBSERVABLE_BY_NAME
    from lit_emergence.report.build import DEFAULT_OBSERVABLES

    parser = OneLineErrorParser(
        prog=prog,
        description="Write the paper's figures (1, 2, 3, 5), per-head LLC curves and the\n"
        "exponent and head tables (CSV + Markdown) from one or several run directories;\n"
        "with several runs, also line up their heads with the first run's by\n"
        "gauge-invariant head matching.",
        # Written out: argparse's wrapping would split the options at their dashes.
        epilog="Until the next release, the old spellings still work:\n  "
        + "\n  ".join(f"{old} (now {new})" for old, new in RENAMED.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: RUN_DIR/report for one run, ./report for several)",
    )
    parser.add_argument(
        "--time_axis",
        choices=("gradient_flow", "step"),
        default="gradient_flow",
        help="time of the fits and figures: cumulative learning rate (lr_integral, default) "
        "or optimizer steps",
    )
    parser.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="block-bootstrap replicates per power-law fit (0: Jacobian errors; default 100)",
    )
    parser.add_argument(
        "--observables",
        nargs="+",
        choices=sorted(OBSERVABLE_BY_NAME),
        default=list(DEFAULT_OBSERVABLES),
        help=f"per-head trajectories to fit (default: {' '.join(DEFAULT_OBSERVABLES)})",
    )
    parser.add_argument(
        "--figure1_heads",
        type=positive_int,
        default=1,
        metavar="N",
        help="draw Figure 1 for each run's N best heads (default 1)",
    )
    parser.add_argument(
        "--no_checkpoint",
        action="store_true",
        help="skip Figure 3 and the cross-run head alignment (the parts that load a model "
        "from a checkpoint)",
    )
    parser.add_argument(
        "--rebuild_probe",
        action="store_true",
        help="for Figure 3 of a run whose saved probe set (emergence/probe_collision_scores.pt) "
        "is missing, re-simulate the run's data from config.yaml and draw the samples from it "
        "(default: no Figure 3 for that run)",
    )
    parser.add_argument(
        "--figure2_above_uniform",
        action="store_true",
        help="Figure 2 shows the score above the uniform-attention level, "
        "(score - u) / (1 - u) with u the score of uniform attention on each run's probe set, "
        "so that uniform attention sits at 0 (heads.csv has both scores either way)",
    )
    parser.add_argument(
        "--llc",
        default=None,
        metavar="FILE",
        help="each run's LLC history, relative to its directory, instead of emergence/llc.csv "
        "(e.g. llc/llc_calibrated.csv, written by 'lit-emergence llc --out')",
    )
    parser.add_argument(
        "--wandb",
        choices=("disabled", "offline", "online"),
        default="disabled",
        help="also log the figures and tables to a W&B run (job_type=report) in OUT/wandb",
    )
    parser.add_argument("--wandb_project", default="lit_emergence", help="W&B project")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def default_out_dir(run_dirs: Sequence[str]) -> Path:
    """``RUN_DIR/report`` for one run, ``./report`` for several."""
    return Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report")


def main(argv: Sequence[str], prog: str = PROGRAM) -> int:
    """Run ``lit-emergence report`` with ``argv`` (the arguments after ``report``).

    Args:
        argv: The arguments after ``report``.
        prog: The program name the usage line shows (``python -m lit_emergence report``).

    Returns:
        The exit status (see the module docstring).
    """
    args = build_parser(prog).parse_args(replace_deprecated(argv, RENAMED, PROGRAM))
    from lit_emergence.records.errors import MissingHistoryError, NotARunError, Unavailable
    from lit_emergence.report.build import build_report

    out_dir = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    try:
        result = build_report(
            args.run_dirs,
            out_dir,
            time_axis=args.time_axis,
            n_bootstrap=args.bootstrap,
            observables=args.observables,
            checkpoint=not args.no_checkpoint,
            figure1_heads=args.figure1_heads,
            quiet=True if args.quiet else None,
            warn=_warn,
            rebuild_probe=args.rebuild_probe,
            figure2_above_uniform=args.figure2_above_uniform,
            llc_file=args.llc,
        )
    except NotARunError as error:
        _error(f"no usable run: {error}")
    except MissingHistoryError as error:
        _error(str(error))
    print(
        f"report of {len(result.runs)} run(s) written to {result.out_dir}/report.md: "
        f"{len(result.figures)} figures, {len(result.tables.get('exponents', []))} fits; "
        f"{len(result.problems)} item(s) not computed (listed there)"
    )
    if args.wandb != "disabled":
        from lit_emergence.report.upload import upload_report

        try:
            location = upload_report(result, args.wandb, project=args.wandb_project)
        except (Unavailable, OSError, RuntimeError, ValueError) as error:
            _warn(f"W&B upload failed: {error}")
            return 1
        print(f"W&B ({args.wandb}) run written to {location}")
    return 0
