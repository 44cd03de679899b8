"""``lit-emergence report``: every figure and table from real run directories; bad input."""

from __future__ import annotations

import csv
import shutil
import sys
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from conftest import read_rows, tiny_config

from lit_emergence.cli import main as lit_emergence_main
from lit_emergence.gauge import apply_gauge, random_gauge
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import load_run
from lit_emergence.report import build_report
from lit_emergence.report.alignment import SUMMARY_COLUMNS, align_runs
from lit_emergence.report.build import load_runs
from lit_emergence.report.checkpoint import CheckpointCache, load_checkpoint
from lit_emergence.report.cli import main as report_main
from lit_emergence.report.fits import EXPONENT_COLUMNS
from lit_emergence.report.heads import summarize_heads
from lit_emergence.report.tables import HEAD_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--bootstrap", "0", "--quiet"]  # Jacobian errors: the fits themselves are tested elsewhere


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory holding one real (tiny) run with all three monitors: ``runs/tiny``."""
    root = tmp_path_factory.mktemp("report")
    config = tiny_config()
    config["wandb"] = "disabled"
    config["trainer"]["max_steps"] = 24
    config["trainer"]["callbacks"] += [
        {
            "class_path": f"lit_emergence.callbacks.{name}",
            "init_args": {"num_probe_samples": 16},
        }
        for name in ("CollisionDetectionMonitor", "AttentionDistanceMonitor")
    ] + [
        {
            "class_path": "lit_emergence.callbacks.LLCMonitor",
            "init_args": {
                "num_chains": 2,
                "num_draws": 4,
                "num_burnin": 2,
                "batch_size": 16,
                "num_batches": 1,
            },
        }
    ]
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # data_cache/ and runs/ land here
        with mock.patch.object(sys, "argv", ["lit-emergence"]):
            lit_emergence_main(["fit", "--config", "tiny.yaml", "--run_dir", "runs/tiny"])
    return root


@pytest.fixture
def in_workdir(workdir, monkeypatch) -> Path:
    monkeypatch.chdir(workdir)
    return workdir


def copy_run(workdir: Path, name: str) -> Path:
    target = workdir / "runs" / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(workdir / "runs" / "tiny", target, ignore=shutil.ignore_patterns("report*"))
    return target


def with_collision_heads(run_dir: Path) -> None:
    """Doctor the last two measurements: L0H0 a true collision head, L0H1 a partial one."""
    path = run_dir / "emergence" / "collision_scores.csv"
    rows = read_rows(path)
    last_two = sorted({int(r["step"]) for r in rows})[-2:]
    for row in rows:
        if int(row["step"]) in last_two and row["layer"] == "0" and row["head"] in ("0", "1"):
            row["score"], row["head_class"] = (
                ("0.95", "true") if row["head"] == "0" else ("0.7", "partial")
            )
    write_rows(path, rows)


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def replace_model(run_dir: Path, module: LearnedSimulator, **hyper_parameters: object) -> None:
    """Put ``module``'s weights (and changed hyperparameters) into the run's ``last.ckpt``."""
    path = last_checkpoint(run_dir)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = module.state_dict()
    checkpoint["hyper_parameters"].update(hyper_parameters)
    torch.save(checkpoint, path)


def permute_and_regauge(run_dir: Path, order: list[int]) -> None:
    """The same function with head h = old head ``order[h]``, in a random gauge (condition 10).

    The collision history is permuted alike, so each head keeps its scores.
    """
    module = LearnedSimulator.load_from_checkpoint(last_checkpoint(run_dir), map_location="cpu")
    transform = random_gauge(module, condition_number=10.0, generator=0)
    transform.permutation = torch.tensor([order])
    replace_model(run_dir, apply_gauge(module, transform))
    path = run_dir / "emergence" / "collision_scores.csv"
    rows = read_rows(path)
    by_head = {(r["step"], r["head"]): r for r in rows}  # the tiny model has one block
    write_rows(
        path, [{**by_head[r["step"], str(order[int(r["head"])])], "head": r["head"]} for r in rows]
    )


def with_two_heads(run_dir: Path) -> None:
    """Replace the run's model by an untrained one with 2 heads per block instead of 4."""
    settings = torch.load(last_checkpoint(run_dir), map_location="cpu", weights_only=False)[
        "hyper_parameters"
    ]
    model_args = {k: v for k, v in settings.items() if not k.startswith("_")}
    replace_model(run_dir, LearnedSimulator(**{**model_args, "n_heads": 2}), n_heads=2)


def test_report_writes_every_figure_and_table(in_workdir, capsys):
    run_dir = copy_run(in_workdir, "heads")
    with_collision_heads(run_dir)
    assert report_main([str(run_dir), *FAST]) == 0
    out = run_dir / "report"
    files = {p.name for p in out.iterdir()}
    assert {
        "figure1_heads_L0H0.png",
        "figure2_score_histogram.png",
        "figure3_heads.png",
        "figure5_heads_per_block.png",
        "llc_curves_heads.png",
        "exponents.csv",
        "exponents.md",
        "heads.csv",
        "heads.md",
        "events.csv",
        "events.md",
        "report.md",
    } <= files, files
    # No EmergenceDetector in the run: its events are replayed from the histories.
    events = read_rows(out / "events.csv")
    assert {r["source"] for r in events} <= {"replayed"}
    assert ("0", "0", "true") in {(r["layer"], r["head"], r["event"]) for r in events}
    report = (out / "report.md").read_text()
    for png in (p for p in out.iterdir() if p.suffix == ".png"):
        assert png.read_bytes().startswith(PNG_MAGIC)
        assert f"]({png.name})" in report  # every figure is embedded
    assert "## Exponents" in report and "## Heads at the end of training" in report
    assert "One run: there is nothing to line up." in report
    assert "alignment.csv" not in files
    assert f"written to {out}" in capsys.readouterr().out


def test_tables_have_one_row_per_head_and_observable(in_workdir):
    run_dir = copy_run(in_workdir, "tables")
    with_collision_heads(run_dir)
    result = build_report([run_dir], in_workdir / "out-tables", n_bootstrap=3, quiet=True)
    heads = read_rows(result.out_dir / "heads.csv")
    assert list(heads[0]) == list(HEAD_COLUMNS)
    # The tiny model: 1 block x 4 heads.
    assert [(r["layer"], r["head"]) for r in heads] == [("0", str(h)) for h in range(4)]
    assert [r["head_class"] for r in heads] == ["true", "partial", "none", "none"]
    exponents = read_rows(result.out_dir / "exponents.csv")
    assert list(exponents[0]) == list(EXPONENT_COLUMNS)
    assert sorted((r["head"], r["observable"]) for r in exponents) == sorted(
        (str(h), o) for h in range(4) for o in ("score", "g_contact")
    )
    for row in exponents:
        assert row["time_axis"] == "gradient_flow"
        assert row["alpha"] or row["note"], row  # an exponent, or the reason there is none
        if row["kind"] == "growth":
            assert row["potential_degree"] == ""  # the potential reading is for decays only
    markdown = (result.out_dir / "exponents.md").read_text()
    assert markdown.count("\n| tables |") == len(exponents)
    # Figure 3 found one head of each class.
    figure3 = next(path for title, path in result.figures if title.startswith("Figure 3"))
    assert figure3.name == "figure3_tables.png"
    assert not [p for p in result.problems if p.item == "Figure 3"]


def test_not_a_run_is_one_line_error_with_status_2(in_workdir, capsys):
    (in_workdir / "not-a-run").mkdir(exist_ok=True)
    (in_workdir / "not-a-run" / "notes.txt").write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["not-a-run", *FAST])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("lit-emergence report: error: no usable run:")
    assert "not a run directory" in err
    with pytest.raises(SystemExit) as exit_info:
        report_main(["does-not-exist", *FAST])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (in_workdir / "not-a-run" / "report").exists()


def test_too_few_points_still_writes_the_report_with_reasons(in_workdir):
    run_dir = copy_run(in_workdir, "short")
    for name in ("collision_scores.csv", "attention_distance.csv"):
        path = run_dir / "emergence" / name
        write_rows(path, [r for r in read_rows(path) if int(r["step"]) <= 3])
    assert report_main([str(run_dir), *FAST]) == 0
    rows = read_rows(run_dir / "report" / "exponents.csv")
    assert len(rows) == 8
    for row in rows:
        assert row["alpha"] == ""
        assert "too few" in row["note"], row["note"]
    assert "too few" in (run_dir / "report" / "exponents.md").read_text()
    assert "head fits are incomplete" in (run_dir / "report" / "report.md").read_text()


def test_run_without_collision_head_is_reported_with_what_could_be_computed(in_workdir, capsys):
    # The tiny run trains for 24 steps: no head gets anywhere near a collision detector.
    run_dir = copy_run(in_workdir, "plain")
    assert report_main([str(run_dir), *FAST]) == 0
    err = capsys.readouterr().err
    assert "collision heads: none developed: the best final score is" in err
    report = (run_dir / "report" / "report.md").read_text()
    assert "none developed" in report
    assert "no true head to show" in report and "no partial head to show" in report
    # What can be computed still is: every figure, Figure 3 with the non-collision example.
    assert (run_dir / "report" / "figure3_plain.png").is_file()
    assert (run_dir / "report" / "figure5_heads_per_block.png").is_file()
    assert all(r["head_class"] == "none" for r in read_rows(run_dir / "report" / "heads.csv"))


def test_several_runs_skip_a_bad_one_with_a_warning(in_workdir, capsys):
    first, second = copy_run(in_workdir, "seed-a"), copy_run(in_workdir, "seed-b")
    with_collision_heads(second)
    (in_workdir / "empty-run" / "emergence").mkdir(parents=True, exist_ok=True)
    out = in_workdir / "several"
    args = [str(first), "empty-run", str(second), "--out", str(out), "--time_axis", "step"]
    assert report_main([*args, "--no_checkpoint", *FAST]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping empty-run:" in err and "no emergence history" in err
    heads = read_rows(out / "heads.csv")
    assert {r["run"] for r in heads} == {"seed-a", "seed-b"}
    assert {r["time_axis"] for r in read_rows(out / "exponents.csv")} == {"step"}
    files = {p.name for p in out.iterdir()}
    assert {"figure1_seed-b_L0H0.png", "llc_curves_seed-a.png", "figure2_score_histogram.png"} <= (
        files
    )
    assert any(name.startswith("figure1_seed-a_") for name in files)
    assert not any(name.startswith("figure3") for name in files)  # --no_checkpoint
    report = (out / "report.md").read_text()
    assert "skipped (--no_checkpoint)" in report and "empty-run" in report
    assert "| (all runs) | head alignment | skipped (--no_checkpoint) |" in report
    assert "alignment.csv" not in files


def test_wandb_offline_upload_lands_inside_the_report(in_workdir):
    run_dir = copy_run(in_workdir, "upload")
    out = in_workdir / "uploaded"
    # The run twice (as "upload" and "upload-2"): the alignment tables are uploaded too.
    args = [str(run_dir), str(run_dir), "--out", str(out), "--wandb", "offline", *FAST]
    assert report_main(args) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    # What the SDK writes in this process (the .wandb record is written by its service, later).
    images = {p.name.split("_0_")[0] for p in files.glob("media/images/figures/*.png")}
    assert images == {p.stem for p in out.glob("*.png")}
    # Table files are named <table>_<step>_<hash>.table.json.
    tables = {p.name.rsplit("_", 2)[0] for p in files.glob("media/table/tables/*.table.json")}
    assert tables == {"heads", "exponents", "events", "alignment", "alignment_summary"}
    assert (files / "report.md").is_file() and (files / "exponents.csv").is_file()


def test_recorded_events_are_used_when_the_run_has_them(in_workdir):
    run_dir = copy_run(in_workdir, "recorded")
    event = {
        "step": "10",
        "lr_integral": "0.01",
        "layer": "0",
        "head": "2",
        "event": "onset",
        "event_step": "7",
        "event_lr_integral": "0.005",
        "value": "0.3",
        "detail": "written by a live detector",
    }
    write_rows(run_dir / "emergence" / "events.csv", [event])
    assert report_main([str(run_dir), "--no_checkpoint", *FAST]) == 0
    rows = read_rows(run_dir / "report" / "events.csv")
    assert [(r["source"], r["head"], r["detail"]) for r in rows] == [
        ("recorded", "2", "written by a live detector")
    ]


HEAD_ORDER = [1, 2, 3, 0]  # the permuted copy's head h is the original's head HEAD_ORDER[h]


def test_heads_of_several_runs_are_lined_up_with_the_first(in_workdir, capsys):
    reference, permuted, narrow = (copy_run(in_workdir, f"align-{n}") for n in "abc")
    for run_dir in (reference, permuted):
        with_collision_heads(run_dir)
    permute_and_regauge(permuted, HEAD_ORDER)
    with_two_heads(narrow)
    out = in_workdir / "aligned"
    args = [str(reference), str(permuted), str(narrow), "--out", str(out), *FAST]
    assert report_main(args) == 0
    rows = read_rows(out / "alignment.csv")
    assert list(rows[0]) == ["layer", "head"] + [
        f"{run}_{column}"
        for run in ("align-a", "align-b")
        for column in ("head", "score", "class", "cost")
    ]  # align-c cannot be aligned: no columns
    assert [(r["layer"], r["head"]) for r in rows] == [("0", str(h)) for h in range(4)]
    for row in rows:
        head = int(row["head"])
        assert (row["align-a_head"], float(row["align-a_cost"])) == (row["head"], 0.0)
        # The gauge-invariant matching undoes the permutation ...
        assert int(row["align-b_head"]) == HEAD_ORDER.index(head)
        assert (row["align-b_score"], row["align-b_class"]) == (
            row["align-a_score"],
            row["align-a_class"],
        )
        # ... at a feature distance of float32 round-off: the checkpoint stores float32
        # weights (relative error 6e-8), which a gauge of condition number 10 amplifies to
        # ~1e-6 in the log singular values; 1e-3 leaves room and is far below the distance
        # between different heads (> 0.1 here).
        assert float(row["align-b_cost"]) < 1e-3
    assert [r["align-a_class"] for r in rows] == ["true", "partial", "none", "none"]
    summary = read_rows(out / "alignment_summary.csv")
    assert list(summary[0]) == list(SUMMARY_COLUMNS)
    assert [(r["run"], r["block"]) for r in summary] == [("align-b", "all"), ("all runs", "all")]
    total = summary[-1]
    # The matched pairs carry the very same scores; identity and random pairings are computed
    # here from the reference's scores alone (float64 means of 4 and 16 numbers: 1e-12).
    scores = np.array([float(r["align-a_score"]) for r in rows])
    assert float(total["gap_matched"]) == 0.0
    assert float(total["gap_identity"]) == pytest.approx(
        np.abs(scores - scores[HEAD_ORDER]).mean(), abs=1e-12
    )
    assert float(total["gap_random"]) == pytest.approx(
        np.abs(scores[:, None] - scores[None, :]).mean(), abs=1e-12
    )
    assert float(total["gap_identity"]) > 0.1  # the doctored true and partial heads moved
    assert (total["true_pairs_matched"], total["true_pairs_identity"]) == ("1", "0")
    assert float(total["true_pairs_random"]) == pytest.approx(1 / 4)
    # Markdown, figure, report.md, and the run that could not be aligned.
    assert (
        "| L0H0 | L0H0 0.95 **true** | L0H3 0.95 **true** (" in (out / "alignment.md").read_text()
    )
    assert (out / "alignment_scores.png").read_bytes().startswith(PNG_MAGIC)
    report = (out / "report.md").read_text()
    assert "## Cross-run head alignment" in report and "](alignment_scores.png)" in report
    assert "Reference run: **align-a**" in report and "integration point" not in report
    reason = (
        "not aligned: its model (n_layers=1, n_heads=2, d_model=16) differs from that of the "
        "reference run align-a (n_layers=1, n_heads=4, d_model=16)"
    )
    assert f"| align-c | head alignment | {reason}" in report
    assert reason in capsys.readouterr().err


def test_a_run_aligned_with_itself_is_the_identity_at_zero_gap(in_workdir):
    run_dir = copy_run(in_workdir, "self")
    with_collision_heads(run_dir)
    runs, _ = load_runs([run_dir, run_dir])
    alignment, problems = align_runs(runs, {run.name: summarize_heads(run) for run in runs})
    assert problems == [] and alignment is not None
    itself = alignment.runs[1]
    assert itself.name == "self-2"
    assert itself.matched_head.tolist() == [[0, 1, 2, 3]]
    # The same checkpoint gives bit-identical features; cdist may still round (it can go
    # through a matrix product), hence 1e-12 rather than exact zero.
    assert np.abs(itself.cost).max() <= 1e-12
    total = alignment.summary()[-1]
    assert total["gap_matched"] == total["gap_identity"] == 0.0
    assert total["gap_random"] > 0.1
    assert total["true_pairs_matched"] == total["true_pairs_possible"] == 1


def test_runs_of_different_shapes_are_not_aligned_and_the_report_is_still_written(in_workdir):
    first, narrow = copy_run(in_workdir, "shape-a"), copy_run(in_workdir, "shape-b")
    with_two_heads(narrow)
    out = in_workdir / "shapes"
    result = build_report([first, narrow], out, n_bootstrap=0, quiet=True)
    assert result.alignment is None and "alignment" not in result.tables
    assert not (out / "alignment.csv").exists() and not (out / "alignment_scores.png").exists()
    assert [(p.run, p.item) for p in result.problems if p.item == "head alignment"] == [
        ("shape-b", "head alignment"),
        ("", "head alignment"),
    ]
    report = (out / "report.md").read_text()
    assert "## Cross-run head alignment" in report and "Not computed (see below)." in report
    assert "fewer than two runs with a loadable checkpoint and the same model shape" in report
    assert (out / "heads.csv").is_file() and any(out.glob("figure3_*.png"))


def count_torch_loads(monkeypatch) -> Counter:
    """Count ``torch.load`` calls by resolved file (``"file object"`` for open files)."""
    counts: Counter = Counter()
    original = torch.load

    def counting_load(source, *args, **kwargs):
        counts[Path(source).resolve() if isinstance(source, str | Path) else "file object"] += 1
        return original(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return counts


def test_each_checkpoint_is_read_once_for_figure3_and_the_alignment(in_workdir, monkeypatch):
    first, second = copy_run(in_workdir, "once-a"), copy_run(in_workdir, "once-b")
    counts = count_torch_loads(monkeypatch)
    result = build_report([first, second], in_workdir / "once", n_bootstrap=0, quiet=True)
    assert result.alignment is not None
    assert {path.name for title, path in result.figures if title.startswith("Figure 3")} == {
        "figure3_once-a.png",
        "figure3_once-b.png",
    }
    # Each checkpoint once (Figure 3 and the alignment share it), each probe set once.
    assert counts == {
        path.resolve(): 1
        for run_dir in (first, second)
        for path in (last_checkpoint(run_dir), run_dir / "emergence" / "probe_collision_scores.pt")
    }


@pytest.mark.parametrize("heads", [4, 2])
def test_loaded_checkpoint_is_what_load_from_checkpoint_gives(workdir, heads):
    run_dir = copy_run(workdir, f"loaded-{heads}")
    if heads == 2:
        with_two_heads(run_dir)  # hyperparameters other than the config's come from the file
    loaded = load_checkpoint(load_run(run_dir))
    expected = LearnedSimulator.load_from_checkpoint(last_checkpoint(run_dir), map_location="cpu")
    module = loaded.module
    assert loaded.path == last_checkpoint(run_dir)
    assert loaded.step == torch.load(last_checkpoint(run_dir), weights_only=False)["global_step"]
    assert not module.training and module.hparams["n_heads"] == heads
    assert dict(module.hparams) == dict(expected.hparams)
    state, expected_state = module.state_dict(), expected.state_dict()
    assert list(state) == list(expected_state)
    for name, tensor in expected_state.items():
        assert state[name].device.type == "cpu", name
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    # The normaliser, restored by on_load_checkpoint.
    normalizer = module.normalizer.state_dict()
    expected_normalizer = expected.normalizer.state_dict()
    assert list(normalizer) == list(expected_normalizer)
    for name, value in expected_normalizer.items():
        assert torch.equal(torch.as_tensor(normalizer[name]), torch.as_tensor(value)), name


def test_checkpoint_cache_remembers_a_checkpoint_that_cannot_be_loaded(workdir, monkeypatch):
    run_dir = copy_run(workdir, "broken")
    last_checkpoint(run_dir).write_bytes(b"not a checkpoint")
    run = load_run(run_dir)
    counts = count_torch_loads(monkeypatch)
    cache = CheckpointCache()
    for _ in range(2):
        with pytest.raises(Unavailable, match=r"^cannot load last\.ckpt: "):
            cache.get(run)
    assert counts == {last_checkpoint(run_dir).resolve(): 1}
    shutil.rmtree(run_dir / "checkpoints")
    with pytest.raises(Unavailable, match=r"^no checkpoint in checkpoints/$"):
        load_checkpoint(load_run(run_dir))


def test_missing_probe_set_is_re_simulated_only_with_rebuild_probe(
    workdir, tmp_path, monkeypatch, capsys
):
    run_dir = copy_run(workdir, "no-probe")
    (run_dir / "emergence" / "probe_collision_scores.pt").unlink()
    # An empty working directory: re-simulating would write data_cache/ here.
    monkeypatch.chdir(tmp_path)
    warnings: list[str] = []
    result = build_report(
        [run_dir], tmp_path / "plain", n_bootstrap=0, quiet=True, warn=warnings.append
    )
    assert not any(title.startswith("Figure 3") for title, _ in result.figures)
    reasons = [p.reason for p in result.problems if p.item.startswith("Figure 3")]
    assert any(
        "emergence/probe_collision_scores.pt" in reason and "--rebuild_probe" in reason
        for reason in reasons
    ), reasons
    assert not (tmp_path / "data_cache").exists()  # no data simulated
    assert not any("re-simulating" in warning for warning in warnings)

    out = tmp_path / "rebuilt"
    assert report_main([str(run_dir), "--out", str(out), "--rebuild_probe", *FAST]) == 0
    assert (out / "figure3_no-probe.png").read_bytes().startswith(PNG_MAGIC)
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "re-simulating" in line] == [
        "lit-emergence report: warning: no-probe: Figure 3: no "
        "emergence/probe_collision_scores.pt; re-simulating the run's data from config.yaml "
        "(--rebuild_probe)"
    ]
    assert (tmp_path / "data_cache").is_dir()  # the rebuilt datamodule simulated here
    assert "--rebuild_probe" not in (out / "report.md").read_text()
