"""Orchestration: from run directories to figures, tables and ``report.md``.

:func:`build_report` loads every run (skipping, with a warning, those that are not runs),
summarises and fits every head, draws the figures, lines up the heads of several runs
(:mod:`.alignment`), writes the tables and the Markdown page, and returns what it wrote and
what it could not compute. Nothing here fails because one piece is missing: each figure or fit
that cannot be made becomes a :class:`Problem` in the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lit_emergence.dynamics import TimeAxis
from lit_emergence.records.errors import NotARunError, Problem, Unavailable
from lit_emergence.records.run import Run, load_run
from lit_emergence.records.schema import OBSERVABLE_BY_NAME, WHOLE_MODEL, head_label, llc_component
from lit_emergence.report import figures
from lit_emergence.report.alignment import (
    ALIGNMENT_ITEM,
    SUMMARY_COLUMNS,
    Alignment,
    align_runs,
    alignment_markdown,
    write_alignment,
)
from lit_emergence.report.attention import attention_snapshot
from lit_emergence.report.checkpoint import CheckpointCache
from lit_emergence.report.document import write_document
from lit_emergence.report.events import EVENT_TABLE_COLUMNS, RunEvents, run_events
from lit_emergence.report.fits import EXPONENT_COLUMNS, HeadFit, fit_head
from lit_emergence.report.heads import (
    HeadSummary,
    best_heads,
    count_classes,
    example_heads,
    summarize_heads,
)
from lit_emergence.report.tables import HEAD_COLUMNS, head_records, write_tables

#: Observables fitted by default (``pearson`` can be added; see :mod:`.fits`).
DEFAULT_OBSERVABLES: tuple[str, ...] = ("score", "g_contact")

#: Title of the alignment figure (it follows Figure 5 in the report).
ALIGNMENT_FIGURE = "Aligned heads — final collision score across runs"


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out_dir: The report directory.
        runs: Names of the runs reported on.
        files: File name (relative to ``out_dir``) -> path, for every file written.
        figures: ``(title, path)`` of every figure, in reading order.
        tables: Table name (``"heads"``, ``"exponents"``, ``"events"``, and with several
            aligned runs ``"alignment"`` and ``"alignment_summary"``) -> its rows.
        columns: Table name -> its column order (as in the CSV files).
        problems: What could not be computed, and why (skipped runs included).
        skipped: Paths that were not usable runs, with the reason.
        alignment: The heads of several runs lined up with the first run's, or ``None``
            (one run, ``checkpoint=False``, or fewer than two alignable runs).
    """

    out_dir: Path
    runs: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    alignment: Alignment | None = None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_runs(run_dirs: Sequence[str | Path]) -> tuple[list[Run], list[Problem]]:
    """Load every run directory; ones that are not runs are set aside with the reason.

    Runs whose directories share a name get ``-2``, ``-3`` ... appended, so files never clash.

    Returns:
        ``(runs, skipped)``.
    """
    runs: list[Run] = []
    skipped: list[Problem] = []
    taken: set[str] = set()
    for run_dir in run_dirs:
        base = _safe_name(Path(run_dir).resolve().name) or "run"
        name, index = base, 2
        while name in taken:
            name, index = f"{base}-{index}", index + 1
        try:
            run = load_run(run_dir, name=name)
        except NotARunError as error:
            skipped.append(Problem(str(run_dir), "run", str(error)))
            continue
        taken.add(name)
        runs.append(run)
    return runs, skipped


def _never_developed(run: Run, summaries: list[HeadSummary]) -> Problem | None:
    scored = [s for s in summaries if math.isfinite(s.score)]
    if not scored or any(s.head_class in ("true", "partial") for s in scored):
        return None
    best = max(scored, key=lambda s: s.score)
    return Problem(
        run.name,
        "collision heads",
        f"none developed: the best final score is {best.score:.2f} ({best.label}), below the "
        f"partial threshold {run.thresholds[1]:g}; figures show the best heads there are",
    )


class _RunReporter:
    """Everything the report makes from one run (figures 1 and 3, LLC curves, fits)."""

    def __init__(
        self,
        run: Run,
        out_dir: Path,
        time_axis: TimeAxis,
        observables: Sequence[str],
        n_bootstrap: int,
        quiet: bool | None,
        checkpoints: CheckpointCache,
        rebuild_probe: bool,
        warn: Callable[[str], None],
    ) -> None:
        self.run = run
        self.out_dir = out_dir
        self.time_axis = time_axis
        self.observables = [OBSERVABLE_BY_NAME[name] for name in observables]
        self.n_bootstrap = n_bootstrap
        self.quiet = quiet
        self.checkpoints = checkpoints
        self.rebuild_probe = rebuild_probe
        self.warn = warn
        self.problems: list[Problem] = list(run.problems)
        self.figures: list[tuple[str, Path]] = []
        self.summaries = summarize_heads(run)
        self.fits: dict[tuple[int, int, str], HeadFit] = {}
        self.events: RunEvents | None = None
        try:
            self.events = run_events(run)
        except Unavailable as reason:
            self.note("emergence events", reason)

    def note(self, item: str, reason: object) -> None:
        """Record that ``item`` could not be computed, and why."""
        self.problems.append(Problem(self.run.name, item, str(reason)))

    def save(self, title: str, file_name: str, draw: Callable[[], Any]) -> None:
        """Draw a figure and save it, or record why it could not be drawn."""
        try:
            figure = draw()
        except Unavailable as reason:
            self.note(title, reason)
            return
        path = self.out_dir / file_name
        figures.save(figure, str(path))
        self.figures.append((title, path))

    def fit_all(self, with_checkpoint: bool) -> None:
        """Fit every head's observables (and load the checkpoint) under one progress bar."""
        heads = [(s.layer, s.head, s.head_class) for s in self.summaries]
        total = len(heads) * len(self.observables) + int(with_checkpoint)
        with tqdm(
            total=total, desc=f"{self.run.name}", unit="fit", leave=False, disable=self.quiet
        ) as bar:
            for layer, head, head_class in heads:
                for observable in self.observables:
                    bar.set_postfix_str(f"{head_label(layer, head)} {observable.name}")
                    self.fits[layer, head, observable.name] = fit_head(
                        self.run,
                        layer,
                        head,
                        observable,
                        head_class=head_class,
                        time_axis=self.time_axis,
                        n_bootstrap=self.n_bootstrap,
                    )
                    bar.update()
            incomplete = sum(1 for fit in self.fits.values() if fit.notes)
            if incomplete:
                self.note(
                    "fits",
                    f"{incomplete} of {len(self.fits)} head fits are incomplete "
                    "(the note column of exponents.csv says why)",
                )
            if with_checkpoint:
                bar.set_postfix_str(f"checkpoint {self.run.checkpoint}")
                self.figure3()
                bar.update()

    def figure1(self, count: int) -> None:
        """Figure 1 for the ``count`` best heads."""
        try:
            chosen = best_heads(self.summaries, count)
        except Unavailable as reason:
            self.note("Figure 1", reason)
            return
        for summary in chosen:
            self.save(
                f"Figure 1 — {self.run.name}, {summary.label}",
                f"figure1_{self.run.name}_{summary.label}.png",
                lambda summary=summary: self._draw_figure1(summary),
            )

    def _draw_figure1(self, summary: HeadSummary) -> Any:
        layer, head = summary.layer, summary.head
        histories = self.run.histories
        collision, distance, llc = (histories.get(n) for n in ("collision", "distance", "llc"))
        return figures.figure1(
            self.run.name,
            summary,
            {name: fit for (fl, fh, name), fit in self.fits.items() if (fl, fh) == (layer, head)},
            collision.for_head(layer, head) if collision is not None else None,
            distance.for_head(layer, head) if distance is not None else None,
            llc.for_component(llc_component(layer, head)) if llc is not None else None,
            llc.for_component(WHOLE_MODEL) if llc is not None else None,
            figures.TIME_LABELS[self.time_axis],
            self.run.thresholds,
            self.events.for_head(layer, head, self.time_axis) if self.events else (),
        )

    def figure3(self) -> None:
        """Figure 3 from the run's checkpoint."""
        examples = example_heads(self.summaries)
        for head_class, summary in examples.items():
            if summary is None:
                self.note("Figure 3", f"no {head_class} head to show")

        def draw() -> Any:
            snapshot = attention_snapshot(
                self.run, self.checkpoints, rebuild_probe=self.rebuild_probe, warn=self.warn
            )
            simulation = self.run.simulation
            return figures.figure3(
                self.run.name, snapshot, examples, (simulation.box_width, simulation.box_height)
            )

        self.save(f"Figure 3 — {self.run.name}", f"figure3_{self.run.name}.png", draw)

    def llc_curves(self) -> None:
        """Per-head LLC curves."""

        def draw() -> Any:
            return figures.llc_curves(
                self.run.name,
                self.run.history("llc"),
                self.summaries,
                figures.TIME_LABELS[self.time_axis],
            )

        self.save(f"LLC curves — {self.run.name}", f"llc_curves_{self.run.name}.png", draw)


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    time_axis: TimeAxis = "gradient_flow",
    n_bootstrap: int = 100,
    observables: Sequence[str] = DEFAULT_OBSERVABLES,
    checkpoint: bool = True,
    figure1_heads: int = 1,
    quiet: bool | None = None,
    warn: Callable[[str], None] | None = None,
    rebuild_probe: bool = False,
) -> ReportResult:
    """Write the report of one or several runs into ``out_dir``.

    Args:
        run_dirs: Run directories made by ``lit-emergence fit`` (e.g. five seeds).
        out_dir: Where the figures, tables and ``report.md`` go (created).
        time_axis: ``"gradient_flow"`` (``lr_integral``, the theory's clock) or ``"step"``.
        n_bootstrap: Block-bootstrap replicates per power-law fit (0: Jacobian errors only).
        observables: Which per-head trajectories to fit (names in
            :data:`lit_emergence.report.fits.OBSERVABLES`).
        checkpoint: Load each run's checkpoint for Figure 3 and, with several runs, to line
            up their heads with the first run's (off: skip both).
        figure1_heads: Figure 1 for this many of each run's best heads.
        quiet: ``True`` hides the progress bars, ``False`` shows them, ``None`` shows them on
            a terminal only.
        warn: Called with each problem (and each skipped path) as it is found, and when a
            run's data is re-simulated (default: nothing; every problem is also in the result
            and in ``report.md``).
        rebuild_probe: For a run whose saved probe set is missing, re-simulate its data from
            ``config.yaml`` to draw Figure 3 (off: that run's Figure 3 is not drawn and the
            reason says to pass ``--rebuild_probe``).

    Returns:
        The :class:`ReportResult`.

    Raises:
        NotARunError: If no path is a usable run (the message gives every reason).
        ValueError: On an unknown time axis or observable.
    """
    if time_axis not in figures.TIME_LABELS:
        raise ValueError(f"time_axis must be 'gradient_flow' or 'step', got {time_axis!r}")
    unknown = [name for name in observables if name not in OBSERVABLE_BY_NAME]
    if unknown:
        raise ValueError(f"unknown observables {unknown}; choose from {sorted(OBSERVABLE_BY_NAME)}")
    warn = warn or (lambda message: None)
    runs, skipped = load_runs(run_dirs)
    runs = [run.on(time_axis) for run in runs]  # every history's `t` on the chosen axis
    if not runs:
        raise NotARunError("; ".join(p.reason for p in skipped) or "no run directory given")
    for problem in skipped:
        warn(f"skipping {problem.run}: {problem.reason}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out, skipped=skipped, problems=list(skipped))
    run_table: list[dict[str, Any]] = []
    summaries_by_run: dict[str, list[HeadSummary]] = {}
    exponent_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    counts: list[tuple[str, dict[str, list[int]]]] = []
    # One load per checkpoint for Figure 3 and the alignment together.
    checkpoints = CheckpointCache()

    for run in tqdm(runs, desc="runs", unit="run", disable=quiet):
        reporter = _RunReporter(
            run,
            out,
            time_axis,
            observables,
            n_bootstrap,
            quiet,
            checkpoints,
            rebuild_probe,
            warn,
        )
        missing_head = _never_developed(run, reporter.summaries)
        if missing_head is not None:
            reporter.problems.append(missing_head)
        reporter.fit_all(with_checkpoint=checkpoint and run.checkpoint is not None)
        if checkpoint and run.checkpoint is None:
            reporter.note("Figure 3", "no checkpoint in checkpoints/")
        reporter.figure1(figure1_heads)
        reporter.llc_curves()
        result.figures.extend(reporter.figures)
        result.problems.extend(reporter.problems)
        for problem in reporter.problems:
            warn(str(problem))
        result.runs.append(run.name)
        summaries_by_run[run.name] = reporter.summaries
        exponent_rows.extend(fit.record() for fit in reporter.fits.values())
        if reporter.events is not None:
            event_rows.extend(reporter.events.records())
        if "collision" in run.histories:
            counts.append((run.name, count_classes(reporter.summaries, run.num_layers)))
        run_table.append(
            {
                "run": run.name,
                "path": str(run.path),
                "last_step": max((h.last_step() for h in run.histories.values()), default=-1),
                "heads": len(reporter.summaries),
                "true": sum(s.head_class == "true" for s in reporter.summaries),
                "partial": sum(s.head_class == "partial" for s in reporter.summaries),
                "checkpoint": run.checkpoint.name if run.checkpoint is not None else "none",
            }
        )
    already_warned = len(result.problems)
    if not checkpoint:
        result.problems.append(Problem("", "Figure 3", "skipped (--no_checkpoint)"))
    _cross_run_figures(runs, counts, out, time_axis, result)
    alignment_section = _align_heads(
        runs, summaries_by_run, checkpoints if checkpoint else None, out, result
    )
    for problem in result.problems[already_warned:]:
        warn(str(problem))
    result.figures.sort(key=lambda item: _reading_order(item[0]))
    head_rows = head_records(s for summaries in summaries_by_run.values() for s in summaries)
    result.tables.update(heads=head_rows, exponents=exponent_rows, events=event_rows)
    result.columns.update(
        heads=list(HEAD_COLUMNS),
        exponents=list(EXPONENT_COLUMNS),
        events=list(EVENT_TABLE_COLUMNS),
    )
    result.files.update(write_tables(out, head_rows, exponent_rows, event_rows))
    for _, path in result.figures:
        result.files[path.name] = path
    result.files["report.md"] = write_document(
        out,
        runs=run_table,
        figures=result.figures,
        head_rows=head_rows,
        exponent_rows=exponent_rows,
        event_rows=event_rows,
        problems=result.problems,
        time_axis=time_axis,
        thresholds=runs[0].thresholds,
        n_bootstrap=n_bootstrap,
        alignment=alignment_section,
    )
    return result


def _reading_order(title: str) -> int:
    """Figures in the paper's order, the alignment, then the LLC curves (runs keep their order)."""
    prefixes = ("Figure 1", "Figure 2", "Figure 3", "Figure 5", ALIGNMENT_FIGURE, "LLC")
    return next((i for i, prefix in enumerate(prefixes) if title.startswith(prefix)), 99)


def _cross_run_figures(
    runs: Sequence[Run],
    counts: Sequence[tuple[str, dict[str, list[int]]]],
    out: Path,
    time_axis: TimeAxis,
    result: ReportResult,
) -> None:
    """Figures 2 and 5, over every run with collision scores."""
    histories = [
        (run.name, run.histories["collision"]) for run in runs if "collision" in run.histories
    ]
    for title, file_name, draw in (
        (
            "Figure 2 — collision scores of every head over training",
            "figure2_score_histogram.png",
            lambda: figures.figure2(histories, figures.TIME_LABELS[time_axis], runs[0].thresholds),
        ),
        (
            "Figure 5 — true and partial heads per block",
            "figure5_heads_per_block.png",
            lambda: figures.figure5(counts),
        ),
    ):
        try:
            figure = draw()
        except Unavailable as reason:
            result.problems.append(Problem("", title, str(reason)))
            continue
        path = out / file_name
        figures.save(figure, str(path))
        result.figures.append((title, path))


def _align_heads(
    runs: Sequence[Run],
    summaries: dict[str, list[HeadSummary]],
    checkpoints: CheckpointCache | None,
    out: Path,
    result: ReportResult,
) -> str:
    """Line up the heads of several runs with the first run's; write its tables and figure.

    Args:
        runs: The runs, the reference first.
        summaries: Run name -> its heads' final values.
        checkpoints: The report's checkpoints, or ``None`` with ``--no_checkpoint``.
        out: The report directory.
        result: Where the alignment, its tables, files, figure and problems go.

    Returns:
        The body of ``report.md``'s alignment section.
    """
    if len(runs) < 2:
        return "One run: there is nothing to line up.\n"
    if checkpoints is None:
        result.problems.append(Problem("", ALIGNMENT_ITEM, "skipped (--no_checkpoint)"))
        return "Not computed: it needs the runs' checkpoints (see below).\n"
    alignment, problems = align_runs(runs, summaries, checkpoints)
    result.problems.extend(problems)
    if alignment is None:
        return "Not computed (see below).\n"
    result.alignment = alignment
    result.tables.update(alignment=alignment.records(), alignment_summary=alignment.summary())
    result.columns.update(alignment=alignment.columns(), alignment_summary=list(SUMMARY_COLUMNS))
    result.files.update(write_alignment(out, alignment))
    path = out / "alignment_scores.png"
    figures.save(figures.alignment_scores(alignment, runs[0].thresholds), str(path))
    result.figures.append((ALIGNMENT_FIGURE, path))
    return alignment_markdown(alignment)
