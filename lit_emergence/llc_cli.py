"""``lit-emergence llc``: LLC estimates on a finished run's checkpoints, and their calibration.

    lit-emergence llc calibrate --run RUN_DIR [--step S]   sweep step size and localisation
    lit-emergence llc RUN_DIR [--per_head] [settings ...]  estimate at every scheduled checkpoint

``calibrate`` (:mod:`lit_emergence.llc.calibrate`) writes ``RUN_DIR/llc/calibration.{png,csv,md,
yaml}`` and prints the ``LLCMonitor`` snippet of the settings it chose; the offline pass
(:mod:`lit_emergence.llc.offline`) appends to ``RUN_DIR/emergence/llc.csv``, resumably. Both
take the run's own ``LLCMonitor`` settings from its ``config.yaml``, then a ``--settings`` file,
then the options given.

Exit status: 0 when done; 1 when ``calibrate`` found no eligible setting (its figure and table
are written all the same) or some checkpoint could not be loaded; 2 on bad input, with one
``lit-emergence llc: error: ...`` line before any sampling. Parsing imports neither torch nor
Lightning, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lit_emergence.cli_args import (
    OneLineErrorParser,
    fail,
    non_negative_float,
    non_negative_int,
    number,
    positive_float,
    positive_int,
)

PROGRAM = "lit-emergence llc"
N_BETA_RULES = ("n/ln(n)", "B/ln(B)")  # lit_emergence.llc.settings.N_BETA_RULES, without torch
SAMPLERS = ("sgld", "rmsprop_sgld")  # lit_emergence.llc.sampler.SAMPLERS
# Options that are LLCMonitor settings (dest names are its argument names); the offline pass
# takes these, and a few more, from a run's config (lit_emergence.llc.offline.SETTING_KEYS).
SETTING_OPTIONS = (
    "num_chains",
    "num_draws",
    "num_burnin",
    "step_size",
    "localization",
    "n_beta",
    "num_samples",
    "localization_check",
    "acceptance_every",
    "sampler",
    "batch_size",
    "num_batches",
    "seed",
)


def _step_size(text: str) -> float | None:
    return None if text == "default" else positive_float(text)


def _n_beta(text: str) -> float | str:
    return text if text in N_BETA_RULES else positive_float(text)


def _check_factor(text: str) -> float | None:
    if text == "none":
        return None
    value = number(text)
    if not (math.isfinite(value) and value > 1):
        raise argparse.ArgumentTypeError(f"must be a factor > 1 or 'none', got {text}")
    return value


def _every(text: str) -> int | None:
    return None if text == "none" else positive_int(text)


def _add_common(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The options both forms share: settings file, budget, temperature, minibatches, device.

    Returns:
        The group of sampler settings (for the options of one form only).
    """
    settings = parser.add_argument_group(
        "sampler settings",
        "Each defaults to the run's own LLCMonitor setting (RUN_DIR/config.yaml),\n"
        "then --settings FILE, else LLCMonitor's default (docs/llc.md).",
    )
    option = argparse.SUPPRESS  # absent options leave the run's settings alone
    settings.add_argument(
        "--settings",
        default=None,
        metavar="FILE",
        help="YAML with an LLCMonitor among trainer.callbacks (e.g. RUN_DIR/llc/"
        "calibration.yaml), or a mapping of its init_args",
    )
    settings.add_argument("--num_chains", type=positive_int, default=option, metavar="K")
    settings.add_argument("--num_draws", type=positive_int, default=option, metavar="T")
    settings.add_argument("--num_burnin", type=non_negative_int, default=option, metavar="B")
    settings.add_argument(
        "--n_beta",
        type=_n_beta,
        default=option,
        metavar="NB",
        help="a number, 'n/ln(n)' (default; n the training set size) or 'B/ln(B)'",
    )
    settings.add_argument(
        "--num_samples",
        type=positive_int,
        default=option,
        metavar="N",
        help="n of n/ln(n) (default: the training set size from config.yaml's data section)",
    )
    settings.add_argument("--sampler", choices=SAMPLERS, default=option)
    settings.add_argument(
        "--acceptance_every",
        type=_every,
        default=option,
        metavar="M",
        help="MALA acceptance at every M-th draw, or 'none'",
    )
    settings.add_argument("--batch_size", type=positive_int, default=option, metavar="B")
    settings.add_argument("--num_batches", type=positive_int, default=option, metavar="M")
    settings.add_argument(
        "--seed", type=non_negative_int, default=option, help="chains' seed (plus the step)"
    )
    parser.add_argument(
        "--device", default="cpu", help="where the chains run: cpu (default), cuda, cuda:1"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return settings


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    """The parser of ``lit-emergence llc RUN_DIR`` (``prog``: the name its usage line shows)."""
    parser = OneLineErrorParser(
        prog=prog,
        usage=f"{prog} [-h] [--per_head] [options] RUN_DIR\n       {prog} calibrate --run "
        "RUN_DIR [--step S] [options]",
        # Written out: argparse's wrapping would split the options at their dashes.
        description="Estimate the whole-model (with --per_head also every head's) LLC at every\n"
        "scheduled checkpoint of a run (checkpoints/step-*.ckpt, saved by ScheduledCheckpoint),\n"
        "with LLCMonitor's code, minibatches and seeds; append the rows to the run's\n"
        "emergence/llc.csv. Resumable: steps already there at the same settings are skipped.\n\n"
        "With 'calibrate': sweep step size and localisation on one checkpoint and pick\n"
        f"settings by the diagnostics ({prog} calibrate --help).",
        epilog=f"Typical use:\n  {prog} calibrate --run runs/quickstart\n"
        f"  {prog} runs/quickstart --per_head --settings runs/quickstart/llc/calibration.yaml"
        " \\\n      --out runs/quickstart/emergence/llc_calibrated.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    parser.add_argument(
        "--per_head", action="store_true", help="every head's weight-refined LLC as well"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="history to append to (default RUN_DIR/emergence/llc.csv, which the report reads)",
    )
    parser.add_argument(
        "--min_step",
        type=non_negative_int,
        default=None,
        metavar="S",
        help="leave out checkpoints before step S (e.g. an emergence window's start)",
    )
    parser.add_argument(
        "--max_step",
        type=non_negative_int,
        default=None,
        metavar="S",
        help="leave out checkpoints after step S",
    )
    settings = _add_common(parser)
    option = argparse.SUPPRESS
    settings.add_argument(
        "--step_size",
        type=_step_size,
        default=option,
        metavar="EPS",
        help="SGLD step size, or 'default' for 0.05 / (n_beta + localization)",
    )
    settings.add_argument(
        "--localization", type=non_negative_float, default=option, metavar="GAMMA"
    )
    settings.add_argument(
        "--localization_check",
        type=_check_factor,
        default=option,
        metavar="F",
        help="also sample at localization / F (same noise) for the verdict, or 'none'",
    )
    return parser


def build_calibrate_parser(prog: str = f"{PROGRAM} calibrate") -> argparse.ArgumentParser:
    """The parser of ``lit-emergence llc calibrate``."""
    parser = OneLineErrorParser(
        prog=prog,
        description="Sweep SGLD step size and localisation on one checkpoint of a run, in one\n"
        "vectorised call; pick the smallest localisation with an eligible setting and, at it,\n"
        "the largest eligible step size (eligible: verdict ok, i.e. no divergence, MALA\n"
        "acceptance >= 0.9, a flat trace, and within 10 % of the estimate at the next smaller\n"
        "localisation). Writes RUN_DIR/llc/calibration.png (loss traces: a panel per\n"
        "localisation, a line per step size), calibration.csv/.md (every setting's\n"
        "diagnostics) and calibration.yaml, the LLCMonitor snippet it prints.\n"
        "Exit status 1 when no setting is eligible.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument(
        "--step",
        type=non_negative_int,
        default=None,
        metavar="S",
        help="the scheduled checkpoint of step S (default: the last checkpoint, last.ckpt)",
    )
    parser.add_argument(
        "--step_sizes",
        type=positive_float,
        nargs="+",
        default=None,
        metavar="EPS",
        help="step sizes to try (default: 0.05 / (n_beta + 1) times 1/256, 1/64, 1/16, 1/4, 1, 4)",
    )
    parser.add_argument(
        "--localizations",
        type=non_negative_float,
        nargs="+",
        default=None,
        metavar="GAMMA",
        help="localisations to try (default: 0.25 1 4 16)",
    )
    parser.add_argument(
        "--per_head",
        action="store_true",
        help="sweep every head as well; a setting must then be eligible for all of them",
    )
    _add_common(parser)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SETTING_OPTIONS if hasattr(args, name)}


def main(argv: Sequence[str], prog: str = PROGRAM) -> int:
    """Run ``lit-emergence llc`` with ``argv`` (the arguments after ``llc``).

    Args:
        argv: The arguments after ``llc``; ``calibrate`` first selects the sweep.
        prog: The program name usage lines and errors show.

    Returns:
        The exit status (see the module docstring).
    """
    argv = list(argv)
    if argv[:1] == ["calibrate"]:
        prog = f"{prog} calibrate"
        args = build_calibrate_parser(prog).parse_args(argv[1:])
        runner, run_dir = _calibrate, args.run
    else:
        args = build_parser(prog).parse_args(argv)
        if (
            args.min_step is not None
            and args.max_step is not None
            and args.min_step > args.max_step
        ):
            fail(prog, f"--min_step {args.min_step} is after --max_step {args.max_step}")
        runner, run_dir = _offline, args.run_dir
    # torch, Lightning and the run only now that the arguments are known to be well formed.
    from lit_emergence.llc.offline import BadInputError, prepare

    try:
        setup = prepare(
            run_dir,
            _overrides(args),
            settings_file=args.settings,
            per_head=args.per_head,
            device=args.device,
        )
        return runner(setup, args, prog)
    except BadInputError as error:
        fail(prog, str(error))
    except OSError as error:  # a write that failed names its file (lit_emergence.records.files)
        where = f"{error.filename}: " if error.filename else ""
        sys.stderr.write(f"{prog}: error: {where}{error.strerror or error}\n")
        return 1


def _announcer(args: argparse.Namespace, prog: str) -> Callable[[str], None] | None:
    """Progress lines on stderr, or None with ``--quiet``."""
    if args.quiet:
        return None
    return lambda text: print(f"{prog}: {text}", file=sys.stderr)


def _offline(setup: Any, args: argparse.Namespace, prog: str) -> int:
    from lit_emergence.llc.offline import estimate_run

    summary = estimate_run(
        setup,
        out=args.out,
        min_step=args.min_step,
        max_step=args.max_step,
        quiet=args.quiet,
        warn=lambda message: _warn(prog, message),
        announce=_announcer(args, prog),
    )
    verdicts = ", ".join(f"{v} {n}" for v, n in sorted(summary.verdicts.items())) or "none"
    print(
        f"{len(summary.estimated)} checkpoint(s) estimated, {len(summary.skipped)} already done"
        + (f", {len(summary.failed)} not loadable" if summary.failed else "")
        + f"; rows in {summary.out} (verdicts of the new rows: {verdicts})"
    )
    if summary.no_lr_integral:
        _warn(
            prog,
            f"no history measured steps {summary.no_lr_integral}: their rows have no "
            "lr_integral (the report shows them on --time_axis step)",
        )
    return 1 if summary.failed else 0


def _calibrate(setup: Any, args: argparse.Namespace, prog: str) -> int:
    from lit_emergence.llc.calibrate import calibrate_run, rule_text, write_calibration

    calibration = calibrate_run(
        setup,
        step=args.step,
        step_sizes=args.step_sizes,
        localizations=args.localizations,
        say=_announcer(args, prog),
    )
    paths = write_calibration(calibration, setup.run.path, setup.monitor_arguments())
    print(f"calibration of step {calibration.step} written to {paths['markdown'].parent}/")
    if calibration.chosen is None:
        verdicts: dict[str, int] = {}
        for point in calibration.points:
            verdicts[point.result.verdict] = verdicts.get(point.result.verdict, 0) + 1
        counted = ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items()))
        _warn(
            prog,
            f"no setting is eligible ({counted}; {rule_text()}): low acceptance or divergence "
            "wants smaller --step_sizes, still-climbing traces more --num_draws/--num_burnin",
        )
        return 1
    eps, gamma = calibration.chosen
    differs = [
        point
        for point in calibration.points
        if (point.step_size, point.localization) == (eps, gamma) and point.step_check == "differs"
    ]
    for point in differs:
        _warn(
            prog,
            f"{point.component}: the estimate at the chosen step ({point.result.llc_mean:.4g}) "
            f"differs by {-point.step_shift:+.0%} from the next smaller step's "
            f"({point.smaller_step:.4g}): either that one has not equilibrated in "
            "the budget or the chosen step is biased; more --num_draws tells which",
        )
    print(f"chosen: step_size {eps:.4g}, localization {gamma:g} ({paths['yaml']}):\n")
    print(paths["yaml"].read_text())
    return 0


def _warn(prog: str, message: str) -> None:
    from tqdm.auto import tqdm

    # Through tqdm, so that a warning does not break a progress bar drawn at the same time.
    tqdm.write(f"{prog}: warning: {message}", file=sys.stderr)
