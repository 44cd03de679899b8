"""``lit-emergence report``: every figure and table from real run directories; bad input."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import fit_in, read_rows, tiny_config
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image
from report_helpers import history, summary_of

from lit_emergence.gauge import apply_gauge, random_gauge
from lit_emergence.module import LearnedSimulator
from lit_emergence.plotting import (
    CONTACT_COLOUR,
    AttentionPanel,
    attention_weight_key,
    draw_attention,
)
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import load_run
from lit_emergence.records.schema import OBSERVABLE_BY_NAME, SCHEDULED_CHECKPOINT
from lit_emergence.report import build_report, figures
from lit_emergence.report.alignment import SUMMARY_COLUMNS, align_runs
from lit_emergence.report.build import DEFAULT_OBSERVABLES, load_runs
from lit_emergence.report.checkpoint import CheckpointCache, load_checkpoint
from lit_emergence.report.cli import main as report_main
from lit_emergence.report.events import Phase
from lit_emergence.report.figures import Figure1Data, PhaseView
from lit_emergence.report.fits import (
    EXPONENT_COLUMNS,
    MIN_DECAY_FACTOR,
    HeadFit,
    fit_trajectory,
)
from lit_emergence.report.heads import summarize_heads
from lit_emergence.report.probe import pick_samples
from lit_emergence.report.tables import HEAD_COLUMNS, NEVER_MOVED

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
    fit_in(root, config)  # data_cache/ and runs/tiny land under root
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
    # Figure 1's caption, one sentence per panel; no phase by height in so short a run.
    assert "*(a) Collision-detection score of L0H0 (dots: the radius-based score;" in report
    assert "(f) Attention on particles per phase not drawn: the detector found no phase" in report
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
    # The attention-distance correlation fitted by default is not the score again.
    assert DEFAULT_OBSERVABLES == ("score", "query_spearman")
    assert sorted((r["head"], r["observable"]) for r in exponents) == sorted(
        (str(h), o) for h in range(4) for o in DEFAULT_OBSERVABLES
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
    assert min(Image.open(figure3).info["dpi"]) >= 150
    caption = result.captions["Figure 3 — tables"]
    assert re.search(r"Top: a free-fall sample \(frame \d+, \d+ contacts: ", caption)
    assert "the true collision head L0H0 (0.95), the partial collision head L0H1 (0.70)" in caption


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
    expected = {"heads", "exponents", "events", "phases", "llc_windows"}
    assert tables == expected | {"alignment", "alignment_summary"}
    assert (files / "report.md").is_file() and (files / "phases.csv").is_file()
    # Copies inside the run, not symlinks out of it (wandb warns about every symlink).
    assert not any(path.is_symlink() for path in files.glob("*.*"))


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


def test_a_run_is_named_as_given_not_after_a_symlinks_target(in_workdir):
    run_dir = copy_run(in_workdir, "target")
    alias = in_workdir / "runs" / "seed0"
    alias.unlink(missing_ok=True)
    alias.symlink_to(run_dir.name)  # runs/seed0 -> target, as a seed sweep links a first run
    runs, _ = load_runs([alias, run_dir])
    assert [run.name for run in runs] == ["seed0", "target"]


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
        "lit-emergence report: warning: no-probe: no "
        "emergence/probe_collision_scores.pt; re-simulating the run's data from config.yaml "
        "(--rebuild_probe)"
    ]
    assert (tmp_path / "data_cache").is_dir()  # the rebuilt datamodule simulated here
    assert "--rebuild_probe" not in (out / "report.md").read_text()


# ------------------------------------------------------------------ figures (issue 14, item 4)


def synthetic_head(bands: int = 4) -> dict[str, Any]:
    """One head's histories over 10 000 steps with a 100-step warm-up, and what they show.

    The score rises around t = 1 and the low bands before the high ones; the per-query
    correlation falls to -0.9 as a power law of t; nothing moves before t ~ 1e-2.
    """
    steps = np.unique(np.r_[0, 100, 1000, 10_000, np.geomspace(1, 10_000, 80).astype(int)])
    lr = 0.003 * np.minimum(np.arange(1, steps[-1] + 1) / 100.0, 1.0)
    t = np.concatenate([[0.0], np.cumsum(lr)])[steps]
    ratio = np.divide(1.0, t, out=np.full_like(t, np.inf), where=t > 0)
    score = 0.17 + 0.78 / (1.0 + ratio**3)
    keys = {"layer": 0, "head": 0}
    collision = [
        {
            "step": int(step),
            "lr_integral": time,
            **keys,
            "score": s,
            "strict": 0.9 * s,
            "impact": 0.92 * s,
            "head_class": "true" if s >= 0.9 else "none",
            **{
                f"score_band{k}": 0.17 + (0.82 - 0.2 * k) / (1.0 + ((1.0 + 2 * k) * r) ** 3)
                for k in range(bands)
            },
        }
        for step, time, s, r in zip(steps, t, score, ratio, strict=True)
    ]
    spearman = -0.1 - 0.8 * t / (t + 0.3)
    distance = [
        {"step": int(step), "lr_integral": time, **keys, "query_spearman": rho}
        for step, time, rho in zip(steps, t, spearman, strict=True)
    ]
    llc = [
        {"step": step, "lr_integral": float(t[steps == step][0]), "component": c, "llc_mean": m}
        | {"llc_std": 0.1 * m}
        for step in (100, 1000, 10_000)
        for c, m in (("l0h0", step / 1000.0), ("model", 3.0 + step / 500.0))
    ]
    at = dict(zip(steps.tolist(), t.tolist(), strict=True))
    return {"steps": steps, "t": t, "score": score, "spearman": spearman, "at": at} | {
        "collision": history("collision", collision),
        "distance": history("distance", distance),
        "llc": history("llc", llc),
    }


def head_fit(observable: str, t: np.ndarray, y: np.ndarray) -> HeadFit:
    spec = OBSERVABLE_BY_NAME[observable]
    fitted = fit_trajectory(t, y, spec.kind, n_bootstrap=0)
    return HeadFit("synthetic", 0, 0, "true", spec, "gradient_flow", **fitted)


def lines_missing_from_legends(figure: Figure) -> list[tuple[str, str]]:
    """Lines of the time panels that no legend names: ``(panel title, line label)``.

    A line is named when its label is in its panel's legend (or it belongs to an error bar
    whose label is), or, unlabelled, when a handle of the figure's legend has its colour and
    style (the event lines and thresholds that every panel shares).
    """
    shared = {
        (to_rgba(handle.get_color()), handle.get_linestyle())
        for legend in figure.legends
        for handle in legend.legend_handles
        if isinstance(handle, Line2D)
    }
    missing = []
    for ax in (ax for ax in figure.axes if ax.get_xscale() == "log"):
        legend = ax.get_legend()
        texts = {text.get_text() for text in legend.get_texts()} if legend else set()
        in_error_bars = {
            id(line)
            for container in ax.containers
            if container.get_label() in texts
            for line in container.get_children()
        }
        for line in ax.get_lines():
            label = str(line.get_label())
            if label in texts or id(line) in in_error_bars:
                continue
            if (
                label.startswith("_")
                and (to_rgba(line.get_color()), line.get_linestyle()) in shared
            ):
                continue
            missing.append((ax.get_title(), label))
    return missing


def figure1_data(head: dict[str, Any], with_views: bool = True) -> Figure1Data:
    """Figure 1's input for the synthetic head: fits, events, two phases, two views."""
    steps, t, at = head["steps"], head["t"], head["at"]
    first, second = int(steps[55]), int(steps[70])
    phases = [
        Phase(
            "first phase",
            "true below 0.5 of the box height only",
            first,
            second,
            at[first],
            at[second],
        ),
        Phase("second phase", "true at every height", second, None, at[second], math.inf),
    ]
    generator = np.random.default_rng(0)
    attention = generator.random((5, 5))
    np.fill_diagonal(attention, 0.0)
    panel = AttentionPanel(
        positions=generator.uniform(1.0, 10.0, (5, 2)),
        radii=np.ones(5),
        attention=attention / attention.sum(axis=1, keepdims=True),
        title="",
        contacts=np.eye(5, k=1, dtype=bool) | np.eye(5, k=-1, dtype=bool),
    )
    views = [PhaseView(phase, phase.start_step, phase.start, panel) for phase in phases]
    events = [
        (at[int(steps[i])], name) for i, name in ((40, "onset"), (50, "partial"), (62, "true"))
    ]
    events += [
        (phase.start, name) for phase, name in zip(phases, ("phase", "phase_end"), strict=True)
    ]
    return Figure1Data(
        run_name="synthetic",
        summary=summary_of(0.95),
        fits={
            "score": head_fit("score", t, head["score"]),
            "query_spearman": head_fit("query_spearman", t, head["spearman"]),
        },
        scores=head["collision"],
        distances=head["distance"],
        llc_head=head["llc"].for_component("l0h0"),
        llc_model=head["llc"].for_component("model"),
        thresholds=(0.9, 0.5),
        events=events,
        events_source="recorded",
        phases=phases,
        phase_views=views if with_views else (),
        phase_note="" if with_views else "no checkpoint in the first phase",
        box=(11.0, 24.0),
        sample="frame 36, 6 contacts",
    )


def test_figure1_reads_on_gradient_flow_with_steps_on_top_and_names_every_line(tmp_path):
    head = synthetic_head()
    data = figure1_data(head)
    assert data.fits["score"].broken is not None  # its t_break line must be named too
    figure, caption = figures.figure1(data)
    time_axes = [ax for ax in figure.axes if ax.get_xscale() == "log"]
    titles = [ax.get_title() for ax in figure.axes]
    # Panels (a)-(e) on the time axis, (f) the attention in each phase; one sentence each.
    assert [title[:3] for title in titles if title.startswith("(")] == [
        "(a)",
        "(b)",
        "(c)",
        "(d)",
        "(e)",
        "(f)",
    ]
    assert re.findall(r"(?:^|\. )\(([a-f])\) ", caption) == list("abcdef")
    assert "per-query Spearman" in titles[1] and "affine" not in caption
    assert sum("phase\nstep" in title for title in titles) == 2
    # The warm-up's empty decades are cropped, and the caption says how many points that is.
    assert time_axes[0].get_xlim()[0] > 10 * head["t"][1]
    assert re.search(
        r"the time axis starts at \S+, leaving out the \d+ earlier measurements", caption
    )
    # The optimizer step on top of the first row, placed where the steps are on the t axis.
    top = time_axes[0].child_axes[0]
    labels = [label.get_text() for label in top.get_xticklabels()]
    assert {"100", "1 000"} <= set(labels)
    position = top.get_xticks()[labels.index("1 000")]
    assert position == pytest.approx(head["at"][1000], rel=1e-9)
    # No twin axes: every panel has its own place; the LLC panel is normalised and says so.
    bounds = [tuple(np.round(ax.get_position().bounds, 6)) for ax in figure.axes]
    assert len(set(bounds)) == len(bounds)
    llc_panel = next(ax for ax in figure.axes if ax.get_title().startswith("(d)"))
    assert llc_panel.get_ylabel() == "LLC ÷ its largest estimate"
    assert "each divided by its largest estimate" in caption
    assert lines_missing_from_legends(figure) == []
    path = tmp_path / "figure1.png"
    figures.save(figure, str(path))
    assert min(Image.open(path).info["dpi"]) >= 150


def test_figure1_without_checkpoints_in_the_phases_says_why_and_widens_the_bands():
    figure, caption = figures.figure1(figure1_data(synthetic_head(), with_views=False))
    assert "(f) Attention on particles per phase not drawn: no checkpoint in the first phase." in (
        caption
    )
    assert not any(title.startswith("(f)") for title in (ax.get_title() for ax in figure.axes))
    bands = next(ax for ax in figure.axes if ax.get_title().startswith("(e)"))
    score = next(ax for ax in figure.axes if ax.get_title().startswith("(a)"))
    assert bands.get_position().width > 1.8 * score.get_position().width  # both columns
    plt.close(figure)


def test_figure1_draws_a_degenerate_approach_against_the_last_value():
    """A power law whose asymptote lies far off the data (exponent ~0) is not drawn in (c)."""
    data = figure1_data(synthetic_head(), with_views=False)
    fit = data.fits["query_spearman"]
    assert fit.power_law is not None
    far = dataclasses.replace(fit.power_law, offset=-2350.0)
    data = dataclasses.replace(
        data, fits={**data.fits, "query_spearman": dataclasses.replace(fit, power_law=far)}
    )
    figure, caption = figures.figure1(data)
    loglog = next(ax for ax in figure.axes if ax.get_title().startswith("(c)"))
    (measured,) = [line for line in loglog.get_lines() if line.get_label().startswith("measured")]
    assert "asymptote -2.35e+03 is off the data" in measured.get_label()
    assert "the last value" in caption
    # Only the measurements (and the unlabelled event lines) are drawn: no fit at |O∞| ~ 2350.
    labelled = [line.get_label() for line in loglog.get_lines()]
    assert [label for label in labelled if not label.startswith("_")] == [measured.get_label()]
    assert np.max(measured.get_ydata()) < 2.0  # |O - O_last| of a correlation, not |O - O∞|
    plt.close(figure)


def write_events(run_dir: Path, events: list[tuple[int, str, int, float]]) -> None:
    """A recorded ``events.csv``: ``(head, event, event_step, value)`` of block 0's heads."""
    times = {
        int(r["step"]): r["lr_integral"]
        for r in read_rows(run_dir / "emergence" / "collision_scores.csv")
    }
    write_rows(
        run_dir / "emergence" / "events.csv",
        [
            {
                "step": step,
                "lr_integral": times[step],
                "layer": 0,
                "head": head,
                "event": event,
                "event_step": step,
                "event_lr_integral": times[step],
                "value": value,
                "detail": "written by the test",
            }
            for head, event, step, value in events
        ],
    )


def scheduled_copy(run_dir: Path, step: int) -> Path:
    """``checkpoints/step-<step>.ckpt``: the final weights, saved as if at ``step``."""
    contents = torch.load(last_checkpoint(run_dir), map_location="cpu", weights_only=False)
    contents["global_step"] = step
    path = run_dir / "checkpoints" / SCHEDULED_CHECKPOINT.format(step=step)
    torch.save(contents, path)
    return path


def test_figure1_draws_the_attention_at_a_checkpoint_in_each_phase(in_workdir, monkeypatch):
    run_dir = copy_run(in_workdir, "phases")
    with_collision_heads(run_dir)  # L0H0 is the best head: Figure 1's
    # First phase from step 5, second (every band true) from step 15 to the end (step 24).
    write_events(run_dir, [(0, "phase", 5, 0.25), (0, "phase_end", 15, 1.0), (0, "true", 15, 0.95)])
    early = scheduled_copy(run_dir, 5)
    later = scheduled_copy(run_dir, 20)  # nearer than last.ckpt (24) to the middle of 15-24
    counts = count_torch_loads(monkeypatch)
    result = build_report([run_dir], in_workdir / "out-phases", n_bootstrap=0, quiet=True)
    caption = result.captions["Figure 1 — phases, L0H0"]
    assert "at step 5 (first phase), step 20 (second phase): line opacity" in caption
    assert "(e) Collision score of L0H0 per band of query height (4 equal bands" in caption
    assert "from step 5 to 15); the second phase" in caption and "from step 15 on)" in caption
    assert counts[early.resolve()] == counts[later.resolve()] == 1
    assert not [p for p in result.problems if "panel (f)" in p.item]

    early.unlink()  # the first phase has no checkpoint now: drawn without it, and said so
    result = build_report([run_dir], in_workdir / "out-phases", n_bootstrap=0, quiet=True)
    caption = result.captions["Figure 1 — phases, L0H0"]
    assert "at step 20 (second phase)" in caption
    assert "no checkpoint in the first phase (steps 5 to 14)" in caption
    [problem] = [p for p in result.problems if "panel (f)" in p.item]
    assert problem.item == "Figure 1 — L0H0, panel (f)"

    result = build_report(
        [run_dir], in_workdir / "out-phases", n_bootstrap=0, quiet=True, checkpoint=False
    )
    assert (
        "(f) Attention on particles per phase not drawn: skipped (--no_checkpoint)."
        in (result.captions["Figure 1 — phases, L0H0"])
    )


def test_phases_table_gives_each_collision_head_its_phases_and_approach_fit(in_workdir):
    run_dir = copy_run(in_workdir, "phase-table")
    with_collision_heads(run_dir)  # L0H0 true, L0H1 partial, the others none
    # L0H0: first phase from step 5 to 15 (then true everywhere); L0H2 (class none) in a first
    # phase from step 10 to the end; L0H1 partial without a phase.
    write_events(run_dir, [(0, "phase", 5, 0.25), (0, "phase_end", 15, 1.0), (2, "phase", 10, 0.5)])
    out = in_workdir / "out-phase-table"
    result = build_report([run_dir], out, n_bootstrap=0, quiet=True, checkpoint=False)
    rows = {(r["layer"], r["head"]): r for r in read_rows(out / "phases.csv")}
    assert set(rows) == {("0", "0"), ("0", "1"), ("0", "2")}  # partial/true, or with a phase
    assert result.tables["phases"] and "## Phases by height" in (out / "report.md").read_text()
    times = {
        int(r["step"]): float(r["lr_integral"])
        for r in read_rows(run_dir / "emergence" / "collision_scores.csv")
    }
    last = times[max(times)]
    ended, lasting, none = rows["0", "0"], rows["0", "2"], rows["0", "1"]
    assert (ended["phase_start_step"], ended["phase_end_step"], ended["phase_height"]) == (
        "5",
        "15",
        "0.25",
    )
    assert ended["first_phase_to_end"] == "False"
    assert float(ended["first_phase_decades"]) == pytest.approx(math.log10(times[15] / times[5]))
    # A phase that never ends lasts to the last measurement.
    assert lasting["first_phase_to_end"] == "True" and lasting["phase_end_step"] == ""
    assert float(lasting["first_phase_decades"]) == pytest.approx(math.log10(last / times[10]))
    assert none["phase_start_step"] == "" and none["head_class"] == "partial"
    # The approach fit is the report's own (exponents.csv) of the distance observable.
    fits = {
        (r["layer"], r["head"]): r
        for r in read_rows(out / "exponents.csv")
        if r["observable"] == "query_spearman"
    }
    for key, row in rows.items():
        assert row["observable"] == "query_spearman"
        assert (row["alpha"], row["window_start"], row["preferred_model"]) == (
            fits[key]["alpha"],
            fits[key]["window_start"],
            fits[key]["preferred_model"],
        )
    assert len(rows["0", "0"]["final_band_scores"].split()) == 4  # floor to top


def probe_tensors(contacts: list[list[tuple[int, int]]], heights: list[float]) -> dict:
    """A probe set of one sample per entry: 4 discs in a row at a height, given contacts."""
    samples = len(heights)
    positions = torch.zeros(samples, 4, 2)
    positions[..., 0] = torch.arange(4) * 3.0
    positions[..., 1] = torch.tensor(heights)[:, None]
    touching = torch.zeros(samples, 4, 4, dtype=torch.bool)
    for sample, pairs in enumerate(contacts):
        for i, j in pairs:
            touching[sample, i, j] = touching[sample, j, i] = True
    return {
        "features": torch.zeros(samples, 4, 4),
        "positions": positions,
        "radii": torch.ones(samples, 4),
        "frame": torch.tensor([0, 10, 20, 90, 95])[:samples],
        "contacts": touching,
    }


def test_figure3_free_fall_sample_is_aloft_with_the_most_contacts():
    # Frames 0-20 aloft (one of them with two contacts), 90 and 95 on the floor.
    tensors = probe_tensors(
        [[], [(0, 1)], [(0, 1), (2, 3)], [(0, 1), (1, 2), (2, 3)], [(0, 1)]],
        [20.0, 18.0, 16.0, 1.0, 1.0],
    )
    samples = pick_samples(tensors, "test")
    assert samples.picks == (2, 4) and samples.frames == (20, 95)
    assert samples.contacts == (2, 1) and "most contacts" in samples.choice
    # No contact while aloft: the earliest frame, and the caption says why.
    tensors["contacts"][:3] = False
    samples = pick_samples(tensors, "test")
    assert samples.picks == (0, 4) and "no sample with its discs still aloft" in samples.choice
    with pytest.raises(Unavailable, match="lack"):
        pick_samples({"frame": tensors["frame"]})


def test_contacts_are_drawn_over_the_attention_with_a_weight_key():
    figure, (ax, key) = plt.subplots(1, 2)
    attention = np.full((4, 4), 0.25)
    contacts = np.eye(4, k=1, dtype=bool)
    panel = AttentionPanel(np.arange(8.0).reshape(4, 2), np.ones(4), attention, "", contacts)
    draw_attention(ax, panel, (11.0, 24.0), contacts_on_top=True, height=8.0)
    lines, red = (c for c in ax.collections if isinstance(c, LineCollection))
    assert red.get_zorder() > lines.get_zorder()
    assert len(red.get_segments()) == 3 and len(lines.get_segments()) == 12
    assert to_rgba(red.get_colors()[0]) == to_rgba(CONTACT_COLOUR)
    assert red.get_linestyle()[0][1] is None  # solid
    assert np.allclose(lines.get_colors()[:, 3], 0.25, atol=1 / 255)  # opacity = weight
    assert ax.get_ylim()[1] == pytest.approx(8.5)  # shown up to the pile
    bar = attention_weight_key(figure, key)
    assert bar.ax.get_ylabel() == "attention weight (line opacity)"
    plt.close(figure)


def test_figure2_above_uniform_and_the_uniform_score_oracle(in_workdir):
    run_dir = copy_run(in_workdir, "uniform")
    out = in_workdir / "out-uniform"
    args = [str(run_dir), "--out", str(out), "--figure2_above_uniform", "--no_checkpoint", *FAST]
    assert report_main(args) == 0
    heads = read_rows(out / "heads.csv")
    # Oracle: uniform attention over the N - 1 others; a query's mass on its neighbours is
    # (number of neighbours) / (N - 1), averaged over the queries that have one.
    probe = torch.load(run_dir / "emergence" / "probe_collision_scores.pt", weights_only=True)
    positions, radii = probe["positions"].double().numpy(), probe["radii"].double().numpy()
    distance = np.linalg.norm(positions[:, :, None] - positions[:, None], axis=-1)
    close = distance <= 1.25 * (radii[:, :, None] + radii[:, None, :])
    close &= ~np.eye(radii.shape[1], dtype=bool)
    neighbours = close.sum(axis=-1)
    uniform = (neighbours / (radii.shape[1] - 1))[neighbours > 0].mean()
    for row in heads:
        assert float(row["uniform_score"]) == pytest.approx(uniform, abs=1e-12)
        score = float(row["score"])
        assert float(row["score_above_uniform"]) == pytest.approx(
            (score - uniform) / (1 - uniform), abs=1e-12
        )
    report = (out / "report.md").read_text()
    assert "shown above the uniform-attention level, (score − u) / (1 − u)" in report
    assert f"({uniform:.3g})" in report


def test_tables_list_strong_heads_first_and_mark_heads_whose_score_never_moved(in_workdir):
    run_dir = copy_run(in_workdir, "order")
    with_collision_heads(run_dir)
    # Heads 2 and 3 have no event: their scores never left the initial level.
    write_events(run_dir, [(1, "partial", 15, 0.7), (0, "true", 15, 0.95), (3, "phase", 15, 0.25)])
    out = in_workdir / "out-order"
    args = [str(run_dir), "--out", str(out), "--no_checkpoint", *FAST]
    assert report_main([*args, "--observables", "score", "g_contact"]) == 0
    exponents = read_rows(out / "exponents.csv")
    assert [(r["head"], r["head_class"]) for r in exponents][::2] == [
        ("0", "true"),
        ("1", "partial"),
        ("2", "none"),
        ("3", "none"),
    ]
    moved = {r["head"]: r["score_moved"] for r in exponents}
    assert moved == {"0": "True", "1": "True", "2": "False", "3": "False"}
    markdown = (out / "exponents.md").read_text().splitlines()[2:]
    for row, line in zip(exponents, markdown, strict=True):
        if row["score_moved"] == "False":
            assert f"| {NEVER_MOVED} |  |  |  |  |" in line
            assert "score never moved" in row["note"]
        else:
            assert NEVER_MOVED not in line
    # G(contact) is the score again: said wherever it is shown.
    assert "G(contact) (affine in the score) (decay)" in "\n".join(markdown)
    assert "| G(contact) (affine in the score) |" in (out / "heads.md").read_text()
    heads = (out / "heads.md").read_text().splitlines()[2:]
    assert [line.split(" | ")[2] for line in heads] == ["**true**", "partial", "none", "none"]


def test_a_flat_decay_has_no_potential_reading():
    t = np.geomspace(1e-3, 10.0, 40)
    steep = head_fit("query_spearman", t, -0.9 + 0.8 * t**-1.0).record()
    assert steep["potential_degree"] == pytest.approx(3.0, rel=1e-6)
    fit = head_fit("query_spearman", t, -0.9 + 0.8 * t**-0.05)
    assert fit.decay_factor < MIN_DECAY_FACTOR
    flat = fit.record()
    assert flat["alpha"] == pytest.approx(0.05, rel=1e-3)
    assert math.isnan(flat["potential_degree"]) and math.isnan(flat["lojasiewicz_exponent"])
    assert flat["note"].startswith("flat: the fit shrinks |O - O_inf| by a factor")


def test_a_dense_llc_history_named_with_llc_gives_each_collision_head_its_window(
    in_workdir, capsys
):
    run_dir = copy_run(in_workdir, "llc-window")
    with_collision_heads(run_dir)  # L0H0 true, L0H1 partial
    times = {
        int(r["step"]): r["lr_integral"]
        for r in read_rows(run_dir / "emergence" / "collision_scores.csv")
    }
    steps = sorted(step for step in times if step > 0)
    onset, phase_start, became_true = steps[1], steps[2], steps[-3]
    write_events(
        run_dir,
        [(0, "onset", onset, 0.3), (0, "phase", phase_start, 0.25), (0, "true", became_true, 0.95)],
    )
    # L0H0 below zero by far more than 2 SE before its first phase, flat at 5 in it; written
    # where `lit-emergence llc --out llc/dense.csv` writes, with the monitor's columns.
    header = list(read_rows(run_dir / "emergence" / "llc.csv")[0])
    rows = []
    for step in steps:
        mean = -20.0 if step < phase_start else 5.0 + 0.01 * (step % 3)
        row = dict.fromkeys(header, "")
        row |= {
            "step": step,
            "lr_integral": times[step],
            "component": "l0h0",
            "llc_mean": mean,
            "llc_std": 1.0,
            "num_chains": 2,
            "verdict": "ok",  # as rows written before the not-at-minimum verdict say
        }
        rows.append(row)
    (run_dir / "llc").mkdir()
    write_rows(run_dir / "llc" / "dense.csv", rows)

    out = in_workdir / "out-llc-window"
    args = [str(run_dir), "--out", str(out), "--llc", "llc/dense.csv", *FAST]
    assert report_main(args) == 0
    (row,) = read_rows(out / "llc_windows.csv")  # L0H1 (partial) has no per-head estimate
    assert (row["layer"], row["head"], row["head_class"]) == ("0", "0", "true")
    before_phase = sum(onset <= step < phase_start for step in steps)
    assert int(row["emerging_not_at_minimum"]) == before_phase
    assert int(row["first_phase_estimates"]) == len([s for s in steps if s >= phase_start])
    assert row["first_phase_not_at_minimum"] == "0" and row["first_phase_trend"] == "flat"
    assert float(row["final_llc"]) == pytest.approx(5.0 + 0.01 * (steps[-1] % 3))
    document = (out / "report.md").read_text()
    assert "## LLC through emergence" in document and "llc_emergence.png" in document
    assert Image.open(out / "llc_emergence.png").size[0] >= 400
    # Without --llc the monitor's sparse history cannot show a window, and the report says so.
    sparse = in_workdir / "out-llc-sparse"
    assert report_main([str(run_dir), "--out", str(sparse), *FAST]) == 0
    assert not (sparse / "llc_emergence.png").exists()
    assert "lit-emergence llc RUN_DIR --per_head" in (sparse / "report.md").read_text()
    # A file that no run has: one line, status 2, before anything is written.
    capsys.readouterr()
    missing = in_workdir / "out-llc-missing"
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(run_dir), "--out", str(missing), "--llc", "llc/none.csv", *FAST])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and not missing.exists()
    assert len(err.splitlines()) == 1 and "no run has a usable LLC history llc/none.csv" in err
    assert "no llc/none.csv" in err  # the reason of each run
    # One run of two without it: reported, under the name of the file asked for.
    other = copy_run(in_workdir, "llc-other")
    both = in_workdir / "out-llc-both"
    args = [str(run_dir), str(other), "--out", str(both), "--llc", "llc/dense.csv", *FAST]
    assert report_main(args) == 0
    not_computed = (both / "report.md").read_text().split("## Not computed")[1]
    assert "| llc-other | llc/dense.csv | no llc/dense.csv |" in not_computed
    assert "no usable llc/dense.csv (was LLCMonitor in the run?)" in not_computed
    assert "emergence/llc.csv" not in not_computed
