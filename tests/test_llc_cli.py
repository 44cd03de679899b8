"""``lit-emergence llc``: offline LLC on scheduled checkpoints, and ``llc calibrate``."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PYTHON, fit_in, read_rows, subprocess_env, tiny_config
from llc_helpers import one_thread  # noqa: F401 (an autouse fixture)

from lit_emergence.callbacks import LLCMonitor
from lit_emergence.cli import main as lit_emergence_main
from lit_emergence.llc.calibrate import CALIBRATION_FILES, COLUMNS, assess
from lit_emergence.llc.diagnostics import verdict
from lit_emergence.llc.result import LLCResult
from lit_emergence.records.schema import LLC, SCHEDULED_CHECKPOINT_GLOB

SMALL = {"num_chains": 2, "num_draws": 20, "num_burnin": 5, "batch_size": 16, "num_batches": 2}
COMPONENTS = {"model", "l0h0", "l0h1", "l0h2", "l0h3"}  # tiny_config: 1 layer of 4 heads
SCHEDULED = [0, 1, 2, 5, 10]  # LogSchedule(points_per_decade=3) up to 10
MONITORED = [0, 1, 10]  # LogSchedule(points_per_decade=1) up to 10


def log_schedule(points_per_decade: int) -> dict:
    return {
        "class_path": "lit_emergence.callbacks.LogSchedule",
        "init_args": {"points_per_decade": points_per_decade},
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One real tiny run (``runs/tiny``): scheduled checkpoints and an LLCMonitor (3 s)."""
    root = tmp_path_factory.mktemp("llc_cli")
    config = tiny_config()
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 10
    config["trainer"]["callbacks"] += [
        {
            "class_path": "lit_emergence.callbacks.ScheduledCheckpoint",
            "init_args": {"schedule": log_schedule(3)},
        },
        {
            "class_path": "lit_emergence.callbacks.LLCMonitor",
            "init_args": {**SMALL, "schedule": log_schedule(1)},
        },
    ]
    fit_in(root, config)  # data_cache/ and runs/tiny land under root
    return root


@pytest.fixture
def run_dir(workdir, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the tiny run, the working directory where its data cache is."""
    monkeypatch.chdir(workdir)
    target = tmp_path / "tiny"
    shutil.copytree(workdir / "runs" / "tiny", target)
    return target


def llc(*args: str) -> int:
    """``lit-emergence llc ARGS`` in-process; its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        lit_emergence_main(["llc", *args])
    return exit_info.value.code


def keys(rows: list[dict[str, str]]) -> list[tuple[int, str]]:
    return [(int(row["step"]), row["component"]) for row in rows]


def test_the_tiny_run_has_what_the_commands_need(workdir):
    folder = workdir / "runs" / "tiny"
    steps = sorted(
        int(p.stem.removeprefix("step-"))
        for p in folder.glob(f"checkpoints/{SCHEDULED_CHECKPOINT_GLOB}")
    )
    assert steps == SCHEDULED
    assert sorted({step for step, _ in keys(read_rows(LLC.path(folder)))}) == MONITORED


def test_offline_llc_adds_every_scheduled_step_once_and_resumes(run_dir, capsys):
    history = LLC.path(run_dir)
    monitored = read_rows(history)
    assert llc(str(run_dir), "--per_head", "--quiet") == 0
    rows = read_rows(history)
    assert list(rows[0]) == list(LLC.columns)
    assert rows[: len(monitored)] == monitored  # appended; the monitor's rows untouched
    assert sorted(keys(rows)) == sorted((s, c) for s in SCHEDULED for c in COMPONENTS)
    new = rows[len(monitored) :]
    assert sorted({int(row["step"]) for row in new}) == [2, 5]  # the steps the monitor skipped
    for row in new:
        assert len(row["llc_per_chain"].split(";")) == SMALL["num_chains"]
        assert math.isfinite(float(row["llc_mean"])) and row["verdict"]
        assert row["lr_integral"] == ""  # no history measured steps 2 and 5
    assert "2 checkpoint(s) estimated, 3 already done" in capsys.readouterr().out

    # Run again: nothing to do, the file is byte for byte the same.
    before = history.read_bytes()
    assert llc(str(run_dir), "--per_head", "--quiet") == 0
    assert history.read_bytes() == before
    assert "0 checkpoint(s) estimated, 5 already done" in capsys.readouterr().out

    # A pass killed after step 2: step 5 is estimated again, the same values, nothing doubled.
    lines = before.decode().splitlines(keepends=True)
    history.write_text("".join(line for line in lines if not line.startswith("5,")))
    assert llc(str(run_dir), "--per_head", "--quiet") == 0
    assert sorted(keys(read_rows(history))) == sorted(keys(rows))
    assert sorted(history.read_text().splitlines()) == sorted(before.decode().splitlines())
    # The whole model only (no --per_head): its rows are all there already.
    assert llc(str(run_dir), "--quiet") == 0
    assert "0 checkpoint(s) estimated, 5 already done" in capsys.readouterr().out


def test_offline_estimates_equal_the_monitors_at_the_same_settings(run_dir):
    """Same weights, minibatches (the run's probe set), seed (seed + step) and code path
    (LLCMonitor.estimate): the rows are identical, every column (no tolerance needed: the
    same float operations in the same order on the CPU)."""
    out = run_dir / "offline.csv"
    assert llc(str(run_dir), "--per_head", "--quiet", "--out", str(out)) == 0
    offline = {key: row for key, row in zip(keys(read_rows(out)), read_rows(out), strict=True)}
    monitored = read_rows(LLC.path(run_dir))
    assert len(monitored) == len(MONITORED) * len(COMPONENTS)
    for key, row in zip(keys(monitored), monitored, strict=True):
        assert offline[key] == row, key


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["missing"], "missing does not exist"),
        (["RUN", "--step_size", "nan"], "argument --step_size: must be finite and > 0, got nan"),
        (["RUN", "--localization", "-1"], "argument --localization: must be finite and >= 0"),
        (["RUN", "--num_chains", "0"], "argument --num_chains: must be >= 1, got 0"),
        (["RUN", "--n_beta", "-3"], "argument --n_beta: must be finite and > 0, got -3"),
        (["RUN", "--localization_check", "1"], "must be a factor > 1 or 'none', got 1"),
        (["RUN", "--min_step", "5", "--max_step", "2"], "--min_step 5 is after --max_step 2"),
        (["RUN", "--min_step", "11"], "no scheduled checkpoint at steps >= 11 (there are 5"),
        (["RUN", "--step_size", "1e-4"], "llc.csv holds estimates at other settings (step_size"),
        (["RUN", "--settings", "missing.yaml"], "settings file missing.yaml: No such file"),
        (["RUN", "--n_beta", "n/ln(n)", "--batch_size", "0"], "--batch_size: must be >= 1"),
        (["calibrate", "--run", "RUN", "--step", "7"], "no scheduled checkpoint of step 7"),
        (["calibrate", "--run", "RUN", "--step_sizes", "1e-3", "inf"], "must be finite and > 0"),
        (
            ["calibrate", "--run", "RUN", "--localizations", "1", "1.0000001"],
            "equal to 6 significant digits",
        ),
        (["calibrate"], "the following arguments are required: --run"),
    ],
)
def test_bad_input_is_one_line_before_any_sampling(run_dir, monkeypatch, capsys, args, says):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the input was checked")

    monkeypatch.setattr("lit_emergence.callbacks.llc.estimate_llc_many", no_sampling)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    status = llc(*[str(run_dir) if a == "RUN" else a for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and says in err[0], err
    prog = "lit-emergence llc calibrate" if args[0] == "calibrate" else "lit-emergence llc"
    assert err[0].startswith(f"{prog}: error: ")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing half-written


def test_a_run_without_scheduled_checkpoints_is_one_line(run_dir, capsys):
    for path in run_dir.glob(f"checkpoints/{SCHEDULED_CHECKPOINT_GLOB}"):
        path.unlink()
    assert llc(str(run_dir)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "has no scheduled checkpoints" in line and "ScheduledCheckpoint" in line


def test_calibrate_writes_figure_table_and_a_snippet_the_monitor_and_llc_take(run_dir, capsys):
    grid = ["--step_sizes", "1e-5", "1e-4", "1e-3", "--localizations", "0.25", "1"]
    status = llc("calibrate", "--run", str(run_dir), "--step", "10", "--quiet", *grid)
    folder = run_dir / "llc"
    table = read_rows(folder / CALIBRATION_FILES["csv"])
    assert list(table[0]) == list(COLUMNS) and len(table) == 3 * 2
    assert {row["component"] for row in table} == {"model"}
    assert (folder / CALIBRATION_FILES["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / CALIBRATION_FILES["markdown"]).read_text()
    assert "at step 10" in markdown and "Rule: eligible" in markdown
    assert not list(folder.glob(".*.tmp"))
    # The rule, recomputed from the table: smallest gamma with an eligible row, largest step.
    eligible = [row for row in table if row["eligible"] == "True"]
    assert status == (0 if eligible else 1)
    assert eligible, "the tiny run has eligible settings in this grid"
    gamma = min(float(row["localization"]) for row in eligible)
    eps = max(float(row["step_size"]) for row in eligible if float(row["localization"]) == gamma)
    (chosen,) = [row for row in table if row["chosen"] == "True"]
    assert (float(chosen["step_size"]), float(chosen["localization"])) == (eps, gamma)
    assert chosen["verdict"] == "ok"
    # A setting's localisation check is the next smaller gamma's estimate.
    for row in table:
        if float(row["localization"]) == 1.0:
            (smaller,) = [
                r
                for r in table
                if r["step_size"] == row["step_size"] and float(r["localization"]) == 0.25
            ]
            assert row["llc_smaller_localization"] == smaller["llc_mean"]

    # The snippet: printed, written, a LightningCLI callbacks entry the monitor accepts.
    snippet = (folder / CALIBRATION_FILES["yaml"]).read_text()
    assert snippet in capsys.readouterr().out
    (entry,) = yaml.safe_load(snippet)["trainer"]["callbacks"]
    assert entry["class_path"] == "lit_emergence.callbacks.LLCMonitor"
    init_args = entry["init_args"]
    assert init_args["step_size"] == pytest.approx(eps, rel=1e-6)
    assert init_args["localization"] == gamma
    # The rule is always written: merged into a config with another (B/ln(B)) it must win.
    assert init_args["n_beta"] == "n/ln(n)"
    assert {k: init_args[k] for k in SMALL if k != "num_batches"} == {
        k: v for k, v in SMALL.items() if k != "num_batches"
    }
    # The minibatches the sweep used: the run's monitor (num_probe_samples unset) drew
    # batch_size x num_batches = 16 x 2 samples, also under LightningCLI, and so does the snippet.
    assert (init_args["num_probe_samples"], init_args["num_batches"]) == (32, 2)
    assert LLCMonitor(**init_args).settings["step_size"] == init_args["step_size"]

    # ... and `lit-emergence llc --settings` estimates with it; at step 10 the calibration's
    # entry of the chosen setting is the very estimate (same noise, seed and minibatches).
    out = run_dir / "calibrated.csv"
    settings = ["--settings", str(folder / CALIBRATION_FILES["yaml"])]
    args = [str(run_dir), *settings, "--out", str(out), "--min_step", "10", "--quiet"]
    assert llc(*args, "--step_size", repr(eps), "--localization_check", "none") == 0
    (row,) = read_rows(out)
    assert (float(row["step_size"]), float(row["localization"])) == (eps, gamma)
    assert float(row["llc_mean"]) == pytest.approx(float(chosen["llc_mean"]), rel=1e-9)


def test_calibrate_per_head_sweeps_every_component(run_dir):
    grid = ["--step_sizes", "1e-4", "--localizations", "0.25", "1", "--per_head", "--quiet"]
    llc("calibrate", "--run", str(run_dir), *grid)  # the last checkpoint (last.ckpt)
    table = read_rows(run_dir / "llc" / CALIBRATION_FILES["csv"])
    assert {row["component"] for row in table} == COMPONENTS
    assert len(table) == len(COMPONENTS) * 2
    chosen = {(row["step_size"], row["localization"]) for row in table if row["chosen"] == "True"}
    if chosen:  # one setting, eligible for every component
        (setting,) = chosen
        assert all(
            row["eligible"] == "True"
            for row in table
            if (row["step_size"], row["localization"]) == setting
        )


def fake(values: list[float], acceptance: float = 1.0) -> LLCResult:
    """A result with these per-chain estimates and this MALA acceptance."""
    chains = torch.tensor(values, dtype=torch.float64)
    diverged = torch.zeros(len(values), dtype=torch.bool)
    return LLCResult(
        llc_per_chain=chains,
        llc_mean=float(chains.mean()),
        llc_std=float(chains.std()),
        init_loss=0.0,
        loss_trace=torch.zeros(len(values), 4, dtype=torch.float64),
        is_draw=torch.ones(4, dtype=torch.bool),
        init_losses=torch.zeros(1, dtype=torch.float64),
        diverged=diverged,
        trace_rise=0.0,
        still_climbing=False,
        num_sampled=1000,
        acceptance=acceptance,
        verdict=verdict(
            num_diverged=0,
            still_climbing=False,
            acceptance=acceptance,
            localization_shift=math.nan,
            shift_z=math.nan,
        ),
    )


def sweep(results: dict[tuple[float, float], LLCResult]):
    keys_ = {f"model:{eps},{gamma}": (eps, gamma) for eps, gamma in results}
    return assess(
        {k: results[v] for k, v in keys_.items()},
        {k: v[0] for k, v in keys_.items()},
        {k: v[1] for k, v in keys_.items()},
        dict.fromkeys(keys_, "model"),
        step=10,
        n_beta=100.0,
    )


def test_the_rule_smallest_eligible_localisation_then_largest_eligible_step():
    base = [10.0, 10.4, 9.6, 10.2]
    results = {}
    for gamma, scale in ((0.25, 1.0), (1.0, 0.99), (4.0, 0.8)):  # gamma = 4 clips 20 %
        results[1e-4, gamma] = fake([v * scale for v in base])
        results[4e-4, gamma] = fake([1.3 * v * scale for v in base], acceptance=0.95)
        results[16e-4, gamma] = fake([3 * v * scale for v in base], acceptance=0.5)
    calibration = sweep(results)
    verdicts = {(p.step_size, p.localization): p.result.verdict for p in calibration.points}
    assert verdicts[1e-4, 4.0] == "localisation-dominated"  # 20 % below gamma = 1
    assert verdicts[1e-4, 1.0] == "ok"  # 1 % below gamma = 0.25
    assert verdicts[16e-4, 0.25] == "not-converged"  # acceptance 0.5
    assert calibration.chosen == (4e-4, 0.25)
    chosen = calibration.point("model", 4e-4, 0.25)
    assert chosen.step_check == "differs"  # 30 % above the smaller step: reported only
    assert chosen.step_shift == pytest.approx(-0.3)

    # The smallest localisation not converging anywhere: the next one is chosen.
    for eps in (1e-4, 4e-4):
        results[eps, 0.25] = fake(base, acceptance=0.5)
    assert sweep(results).chosen == (4e-4, 1.0)
    # Nothing eligible: nothing chosen.
    assert sweep({key: fake(base, acceptance=0.5) for key in results}).chosen is None


def test_help_imports_neither_torch_nor_lightning():
    code = (
        "import sys\n"
        "from lit_emergence import llc_cli\n"
        "for argv in (['--help'], ['calibrate', '--help']):\n"
        "    try:\n"
        "        llc_cli.main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0\n"
        "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, timeout=60, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr
    assert "calibrate --run RUN_DIR" in result.stdout


def test_calibrate_without_an_eligible_setting_exits_1_and_writes_no_snippet(run_dir, capsys):
    # A step of 10 in a loss of curvature ~1 throws every chain out: nothing is eligible.
    grid = ["--step_sizes", "10", "--localizations", "1", "--quiet"]
    status = llc("calibrate", "--run", str(run_dir), "--step", "10", *grid)
    assert status == 1
    folder = run_dir / "llc"
    assert (folder / CALIBRATION_FILES["figure"]).is_file()
    (row,) = read_rows(folder / CALIBRATION_FILES["csv"])
    assert row["verdict"] == "diverged" and row["chosen"] == "False"
    assert not (folder / CALIBRATION_FILES["yaml"]).exists()
    assert "no setting is eligible (diverged 1" in capsys.readouterr().err
