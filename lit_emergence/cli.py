"""Command-line entry point: ``lit-emergence fit --config configs/quickstart.yaml``.

``lit-emergence`` (or ``python -m lit_emergence``) dispatches to one of:

* LightningCLI's commands ``fit``, ``validate``, ``test``, ``predict`` and the top level
  (:mod:`lit_emergence.lightning_cli`: run directories, loggers, one-line errors);
* the commands of :data:`EXTRA_COMMANDS` (``report``, ``seeds``, ``llc``), each a module with
  its own small parser.

This module imports neither torch nor Lightning: they are imported for real work only. A bare
``[COMMAND] --help`` is printed from :mod:`lit_emergence.cli_help`'s cache when the program
runs as a command (``main()`` reading ``sys.argv``), so it needs neither after its first use;
``main(args)`` called from Python always builds the text afresh.

Option spelling: every option of our own is spelled with underscores (``--run_dir``,
``--time_axis``), like LightningCLI's (``--ckpt_path``, ``--trainer.max_steps``). A command that
renamed an option keeps the old spelling working for one release, with a one-line note on
stderr (:func:`lit_emergence.cli_aliases.replace_deprecated`).

Adding a command (e.g. ``llc``): write a module whose ``main(argv: list[str], prog: str) -> int``
parses ``argv`` (the arguments after the command's name), runs the command and returns the exit
status, with ``prog`` (e.g. ``"lit-emergence llc"``) as its parser's ``prog``; import heavy
modules inside ``main``, after parsing, so that its ``--help`` stays fast when not cached. Then
add one :class:`Command` to :data:`EXTRA_COMMANDS`; the top-level help lists it, and its
``--help`` is cached like the others.
"""

from __future__ import annotations

import importlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lit_emergence.cli_help import HelpCache, cache_enabled, captured, default_cache_dir
from lit_emergence.cli_help import help_request as _help_request

PROGRAM = "lit-emergence"
MODULE_PROGRAM = "python -m lit_emergence"
# LightningCLI's own commands (LightningCLI.subcommands(), kept here to dispatch without it).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


@dataclass(frozen=True)
class Command:
    """A command beside LightningCLI's, for the finished runs (no model, no Trainer).

    Attributes:
        module: Module whose ``main(argv, prog)`` runs it and returns the exit status.
        usage: Its arguments as the top-level help shows them (``"RUN_DIR [RUN_DIR ...]"``).
        summary: What it does, in a few words, for the top-level help.
    """

    module: str
    usage: str
    summary: str


#: Commands beside LightningCLI's, by name (see the module docstring to add one).
EXTRA_COMMANDS: dict[str, Command] = {
    "report": Command(
        "lit_emergence.report.cli", "RUN_DIR [RUN_DIR ...]", "figures and tables from finished runs"
    ),
    "seeds": Command("lit_emergence.seeds", "--config CONFIG", "train several seeds, then report"),
    "llc": Command(
        "lit_emergence.llc_cli",
        "[calibrate --run] RUN_DIR",
        "LLC on a run's checkpoints; calibrate its settings",
    ),
}


def _also(prog: str) -> str:
    """The top-level help's list of the extra commands."""
    lines = ["", "Also:"]
    width = max(len(f"{name} {c.usage}") for name, c in EXTRA_COMMANDS.items())
    for name, command in EXTRA_COMMANDS.items():
        call = f"{name} {command.usage}".ljust(width)
        lines.append(f"  {call}   {command.summary} ({prog} {name} --help)")
    return "\n".join(lines) + "\n"


def _check_config_syntax(argv: list[str]) -> None:
    """Stop with one line naming the file, line and column of a config that is not YAML."""
    paths = [b for a, b in itertools.pairwise(argv) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not paths:
        return
    import yaml  # only when there is a config to read

    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue  # the parser reports a missing file itself
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            sys.stderr.write(f"{PROGRAM}: error: config {path}: not valid YAML{where}: {problem}\n")
            raise SystemExit(2) from None


def _run(args: list[str] | None, argv: list[str], prog: str) -> None:
    """Run the command ``argv`` names (``args`` is what LightningCLI gets: None reads sys.argv)."""
    _check_config_syntax(argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[argv[0]].module)
        raise SystemExit(module.main(argv[1:], prog=f"{prog} {argv[0]}"))
    from lit_emergence.lightning_cli import run

    if argv[:1] in (["-h"], ["--help"]):
        try:
            run(args, prog)
        finally:  # LightningCLI's help exits; name the commands it does not know about
            sys.stdout.write(_also(prog))
    run(args, prog)


def _cached_help(command: tuple[str, ...], argv: list[str], prog: str) -> NoReturn:
    """Print a command's help from the cache (building and storing it first if needed)."""
    import lit_emergence

    cache = HelpCache(default_cache_dir(), Path(lit_emergence.__file__).parent)
    sys.stdout.write(cache.text(command, prog, lambda: captured(lambda: _run(None, argv, prog))))
    raise SystemExit(0)


def main(args: list[str] | None = None, *, prog: str = PROGRAM) -> None:
    """Console-script entry point (``lit-emergence``, ``python -m lit_emergence``).

    Args:
        args: The arguments after the program name; None reads ``sys.argv`` (and may print a
            bare ``--help`` from the cache).
        prog: The program name usage lines show: ``lit-emergence``, or
            ``python -m lit_emergence`` under ``python -m``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    command = _help_request(argv, (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS))
    if args is None and command is not None and cache_enabled():
        _cached_help(command, argv, prog)
    _run(args, argv, prog)


if __name__ == "__main__":
    main()
