"""The command line's help: every command's options, one spelling, program names, the cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PYTHON, subprocess_env
from lightning.pytorch.cli import LightningCLI

from lit_emergence.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, MODULE_PROGRAM, PROGRAM, main
from lit_emergence.cli_aliases import replace_deprecated
from lit_emergence.cli_help import CACHE_DIR_ENV, HelpCache, captured, help_request
from lit_emergence.report.cli import RENAMED
from lit_emergence.report.cli import build_parser as report_parser

# Options each command's help must show (a sample of our own and, for fit, LightningCLI's).
SHOWN = {
    (): [
        "--config",
        "fit",
        "validate",
        "test",
        "predict",
        "report RUN_DIR",
        "seeds --config",
        "llc [calibrate --run] RUN_DIR",
    ],
    ("fit",): ["--run_dir", "--run_root", "--wandb_project", "--if_no_checkpoint", "--ckpt_path"],
    ("validate",): ["--run_dir", "--wandb_project", "--ckpt_path", "--trainer.max_steps"],
    ("test",): ["--run_dir", "--ckpt_path", "--model.n_heads"],
    ("predict",): ["--run_dir", "--ckpt_path", "--data.batch_size"],
    ("report",): ["RUN_DIR", "--time_axis", "--no_checkpoint", "--rebuild_probe", "--wandb"],
    ("seeds",): ["--config", "--seeds", "--run_root", "--no_report"],
    ("llc",): [
        "RUN_DIR",
        "--per_head",
        "--step_size",
        "--localization",
        "--settings",
        "--out",
        "llc calibrate --run RUN_DIR [--step S]",
    ],
}
COMMANDS = list(SHOWN)


@pytest.fixture
def as_program(monkeypatch, tmp_path) -> Path:
    """sys.argv as a console script sees it, and an empty help cache of its own."""
    monkeypatch.setattr(sys, "argv", [PROGRAM])
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "help"


def help_of(command: tuple[str, ...], prog: str, capsys) -> str:
    """A command's help as ``main`` prints it from Python (never from the cache)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"], prog=prog)
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_every_command_is_covered():
    assert tuple(LightningCLI.subcommands()) == LIGHTNING_COMMANDS
    assert {c[0] for c in COMMANDS if c} == {*LIGHTNING_COMMANDS, *EXTRA_COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_shows_options_under_the_program_name(command, as_program, capsys):
    out = help_of(command, MODULE_PROGRAM, capsys)
    missing = [option for option in SHOWN[command] if option not in out]
    assert not missing, out
    if command and command[0] in LIGHTNING_COMMANDS:  # LightningCLI's subcommand usage
        command = ("[options]", *command)
    assert out.startswith(f"usage: {' '.join([MODULE_PROGRAM, *command])} "), out[:200]
    assert "__main__" not in out


@pytest.mark.parametrize(
    "command", [("fit",), ("report",), ("seeds",), ("llc",)], ids=lambda c: c[0]
)
def test_our_options_are_spelled_with_underscores(command, as_program, capsys):
    out = help_of(command, PROGRAM, capsys)
    # The report's epilog lists the old spellings it still accepts; everything else is options.
    out = out.split("the old spellings still work")[0]
    dashed = sorted(set(re.findall(r"--[\w.]+(?:-[\w.]+)+", out)))
    assert dashed == [], dashed


def test_old_report_spellings_still_work_and_say_the_new_one(capsys):
    old = ["run", "--time-axis", "step", "--figure1-heads=3", "--no-checkpoint"]
    old += ["--rebuild-probe", "--wandb-project", "p", "--time-axis=gradient_flow"]
    args = report_parser().parse_args(replace_deprecated(old, RENAMED, "lit-emergence report"))
    assert args.time_axis == "gradient_flow" and args.figure1_heads == 3  # the last one wins
    assert args.no_checkpoint and args.rebuild_probe and args.wandb_project == "p"
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == len(RENAMED)  # one note per old spelling, however often it is used
    assert notes[0] == (
        "lit-emergence report: warning: --time-axis is deprecated and will be removed in the "
        "next release; use --time_axis"
    )


def test_old_spelling_through_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "missing-run", "--no-checkpoint"])
    assert exit_info.value.code == 2  # parsed; then no usable run
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(
        "--no-checkpoint is deprecated and will be removed in the next release; use --no_checkpoint"
    )
    assert err[1].startswith("lit-emergence report: error: no usable run")


def test_aliases_leave_values_and_other_commands_alone():
    argv = ["--out", "--time-axis-x", "--time-axis", "step", "--", "--time-axis", "x"]
    renamed = replace_deprecated(argv, {"--time-axis": "--time_axis"}, "p")
    assert renamed == ["--out", "--time-axis-x", "--time_axis", "step", "--", "--time-axis", "x"]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--help"], ()),
        (["-h"], ()),
        (["fit", "--help"], ("fit",)),
        (["seeds", "-h"], ("seeds",)),
        (["fit", "--config", "a.yaml", "--help"], None),  # a config changes the defaults shown
        (["bogus", "--help"], None),
        (["fit"], None),
        ([], None),
    ],
)
def test_only_a_bare_help_is_cached(argv, command):
    assert help_request(argv, ("fit", "seeds")) == command


def test_module_and_console_script_name_themselves_and_reuse_the_cache(tmp_path):
    env = {**subprocess_env(), CACHE_DIR_ENV: str(tmp_path / "cache")}
    script = str(Path(PYTHON).parent / "lit-emergence")

    def run(*command: str) -> str:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # seeds: the command whose help is cheap to build, so the test is too.
    first = run(PYTHON, "-m", "lit_emergence", "seeds", "--help")
    assert first.startswith("usage: python -m lit_emergence seeds [-h]"), first[:100]
    (entry,) = (tmp_path / "cache" / "help").iterdir()
    assert json.loads(entry.read_text())["text"] == first
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "text": "from the cache\n"}))
    assert run(PYTHON, "-m", "lit_emergence", "seeds", "--help") == "from the cache\n"
    assert run(script, "seeds", "--help").startswith("usage: lit-emergence seeds [-h]")


def test_fit_help_is_built_again_when_its_key_changes(as_program, monkeypatch, capsys):
    """A cached text is served only for the same inputs; here the terminal width changes."""

    def from_the_command_line() -> str:
        monkeypatch.setattr(sys, "argv", [PROGRAM, "fit", "--help"])
        with pytest.raises(SystemExit) as exit_info:
            main()
        monkeypatch.setattr(sys, "argv", [PROGRAM])
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    monkeypatch.setenv("COLUMNS", "100")
    wide = from_the_command_line()
    assert wide == help_of(("fit",), PROGRAM, capsys)
    (entry,) = as_program.iterdir()
    # A damaged entry is built again, not printed.
    entry.write_text(entry.read_text()[:100])
    assert from_the_command_line() == wide

    monkeypatch.setenv("COLUMNS", "60")
    narrow = from_the_command_line()
    assert narrow != wide and narrow == help_of(("fit",), PROGRAM, capsys)
    assert len(list(as_program.iterdir())) == 1  # the superseded entry is gone


class Builder:
    """Counts builds and returns a new text each time, so a stale text is recognisable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"help #{self.calls}\n"


@pytest.fixture
def package(tmp_path) -> Path:
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "sub" / "config.py").write_text("x: int = 1\n")
    return folder


def test_every_key_part_gives_fresh_text(tmp_path, package, monkeypatch):
    cache, build = HelpCache(tmp_path / "cache", package), Builder()
    assert cache.text(("fit",), "p", build) == "help #1\n"
    assert cache.text(("fit",), "p", build) == "help #1\n" and build.calls == 1

    changes = [
        lambda: (package / "sub" / "config.py").write_text("x: int = 2\n"),  # our source
        lambda: (package / "new.py").write_text(""),  # a new module
        lambda: monkeypatch.setenv("PL_FIT__TRAINER__MAX_STEPS", "5"),  # LightningCLI's env
        lambda: monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true"),
        lambda: monkeypatch.setenv("COLUMNS", "61"),  # the terminal width
        lambda: monkeypatch.setenv("PYTHONPATH", str(tmp_path)),
    ]
    for number, change in enumerate(changes, start=2):
        change()
        assert cache.text(("fit",), "p", build) == f"help #{number}\n"
        assert cache.text(("fit",), "p", build) == f"help #{number}\n"  # and stored again

    # An installed package (here: one more dist-info folder on sys.path).
    site = tmp_path / "site"
    (site / "somepackage-1.0.dist-info").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    assert cache.text(("fit",), "p", build) == "help #8\n"
    (site / "somepackage-1.0.dist-info").rename(site / "somepackage-1.1.dist-info")
    assert cache.text(("fit",), "p", build) == "help #9\n"
    # Other commands and program names have entries of their own.
    assert cache.text(("test",), "p", build) == "help #10\n"
    assert cache.text(("fit",), "python -m p", build) == "help #11\n"
    assert cache.text(("fit",), "p", build) == "help #9\n"


def test_an_unwritable_cache_still_prints(tmp_path, package):
    (tmp_path / "afile").write_text("")
    cache, build = HelpCache(tmp_path / "afile" / "help", package), Builder()
    assert cache.text((), "p", build) == "help #1\n"
    assert cache.text((), "p", build) == "help #2\n"


def test_captured_keeps_a_failure():
    def fails() -> None:
        print("partial")
        raise SystemExit(2)

    def helps() -> None:
        print("usage: x")
        raise SystemExit(0)

    assert captured(helps) == "usage: x\n"
    with pytest.raises(SystemExit) as exit_info:
        captured(fails)
    assert exit_info.value.code == 2
