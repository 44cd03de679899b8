"""Orchestration: from run directories to figures, tables and ``report.md``.

:func:`build_report` loads every run (skipping, with a warning, those that are not runs),
summarises and fits every head, draws the figures, lines up the heads of several runs
(:mod:`.alignment`), writes the tables and the Markdown page, and returns what it wrote and
what it could not compute. Nothing here fails because one piece is missing: each figure or fit
that cannot be made becomes a :class:`Problem` in the report.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lit_emergence.detection import WARNING_EVENTS
from lit_emergence.dynamics import TimeAxis
from lit_emergence.plotting import AttentionPanel
from lit_emergence.records.errors import Problem, Unavailable
from lit_emergence.records.run import History, Run, load_runs
from lit_emergence.records.schema import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    OBSERVABLE_BY_NAME,
    SCHEDULED_CHECKPOINT_GLOB,
    WHOLE_MODEL,
    Observable,
    llc_component,
)
from lit_emergence.report import figures
from lit_emergence.report.alignment import (
    ALIGNMENT_ITEM,
    SUMMARY_COLUMNS,
    align_runs,
    alignment_markdown,
    write_alignment,
)
from lit_emergence.report.attention import attention_snapshot
from lit_emergence.report.checkpoint import CheckpointCache, scheduled_checkpoints
from lit_emergence.report.document import write_document
from lit_emergence.report.events import EVENT_TABLE_COLUMNS, Phase, RunEvents, run_events
from lit_emergence.report.fits import EXPONENT_COLUMNS, HeadFit, fit_head
from lit_emergence.report.heads import (
    HeadSummary,
    best_heads,
    count_classes,
    example_heads,
    summarize_heads,
)
from lit_emergence.report.llc_windows import (
    LLC_WINDOW_COLUMNS,
    HeadLLCWindow,
    head_windows,
    llc_window_records,
    llc_windows_markdown,
)
from lit_emergence.report.phases import PHASE_COLUMNS, phase_records, phases_markdown
from lit_emergence.report.probe import ProbeSamples, load_probe, pick_samples, uniform_score
from lit_emergence.report.result import ReportResult
from lit_emergence.report.tables import (
    HEAD_COLUMNS,
    head_records,
    strongest_first,
    write_csv,
    write_tables,
)

#: The attention-distance correlation the report uses: the per-query Spearman correlation of
#: attention with distance, averaged over queries (chosen in ``docs/metrics.md``: not a function
#: of the score, unlike ``g_contact``).
DISTANCE_OBSERVABLE = "query_spearman"
#: Observables fitted by default (any of ``OBSERVABLES`` can be; see :mod:`.fits`).
DEFAULT_OBSERVABLES: tuple[str, ...] = ("score", DISTANCE_OBSERVABLE)
# A head whose score has any of these events has left its initial level.
_MOVED_EVENTS = frozenset((*WARNING_EVENTS, "true"))

#: Title of the alignment figure (it follows Figure 5 in the report).
ALIGNMENT_FIGURE = "Aligned heads — final collision score across runs"


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


@dataclass(frozen=True)
class _Settings:
    """The report's settings every run is reported with."""

    out_dir: Path
    time_axis: TimeAxis
    observables: tuple[Observable, ...]
    n_bootstrap: int
    quiet: bool | None
    checkpoint: bool
    rebuild_probe: bool
    warn: Callable[[str], None]

    @property
    def distance_observable(self) -> Observable:
        """The attention-distance observable of Figure 1 (the first one fitted, by default)."""
        fitted = [o for o in self.observables if o.history == "distance"]
        return fitted[0] if fitted else OBSERVABLE_BY_NAME[DISTANCE_OBSERVABLE]


class _RunReporter:
    """Everything the report makes from one run (figures 1 and 3, LLC curves, fits)."""

    def __init__(self, run: Run, settings: _Settings, checkpoints: CheckpointCache) -> None:
        self.run = run
        self.settings = settings
        self.checkpoints = checkpoints
        self.problems: list[Problem] = list(run.problems)
        self.figures: list[tuple[str, Path]] = []
        self.captions: dict[str, str] = {}
        self._probe: ProbeSamples | Unavailable | None = None
        self.uniform = math.nan
        with contextlib.suppress(Unavailable):
            self.uniform = uniform_score(run, self.probe().tensors)
        self.summaries = summarize_heads(run, self.uniform)
        self.fits: dict[tuple[int, int, str], HeadFit] = {}
        self.events: RunEvents | None = None
        try:
            self.events = run_events(run)
        except Unavailable as reason:
            self.note("emergence events", reason)

    def note(self, item: str, reason: object) -> None:
        """Record that ``item`` could not be computed, and why."""
        self.problems.append(Problem(self.run.name, item, str(reason)))

    def probe(self) -> ProbeSamples:
        """The run's probe samples, loaded on first request (a failure is remembered).

        Raises:
            Unavailable: Without a probe set (see :func:`lit_emergence.report.probe.load_probe`).
        """
        if self._probe is None:
            try:
                tensors, source = load_probe(
                    self.run, self.settings.rebuild_probe, self.settings.warn
                )
                self._probe = pick_samples(tensors, source)
            except Unavailable as reason:
                self._probe = reason
        if isinstance(self._probe, Unavailable):
            raise Unavailable(str(self._probe))
        return self._probe

    def save(self, title: str, file_name: str, draw: Callable[[], Any]) -> None:
        """Draw a figure (optionally captioned) and save it, or record why it was not drawn."""
        try:
            drawn = draw()
        except Unavailable as reason:
            self.note(title, reason)
            return
        if isinstance(drawn, figures.Captioned):
            self.captions[title] = drawn.caption
            drawn = drawn.figure
        path = self.settings.out_dir / file_name
        figures.save(drawn, str(path))
        self.figures.append((title, path))

    def score_moved(self, layer: int, head: int) -> bool | None:
        """Whether the head's score left its initial level (an event says so), None if unknown."""
        if self.events is None:
            return None
        names = {name for _, name in self.events.for_head(layer, head, self.settings.time_axis)}
        return bool(names & _MOVED_EVENTS)

    def fit_all(self, with_checkpoint: bool) -> None:
        """Fit every head's observables (and load the checkpoint) under one progress bar."""
        settings = self.settings
        total = len(self.summaries) * len(settings.observables) + int(with_checkpoint)
        with tqdm(
            total=total, desc=f"{self.run.name}", unit="fit", leave=False, disable=settings.quiet
        ) as bar:
            for summary in self.summaries:
                layer, head = summary.layer, summary.head
                moved = self.score_moved(layer, head)
                for observable in settings.observables:
                    bar.set_postfix_str(f"{summary.label} {observable.name}")
                    self.fits[layer, head, observable.name] = fit_head(
                        self.run,
                        layer,
                        head,
                        observable,
                        head_class=summary.head_class,
                        time_axis=settings.time_axis,
                        n_bootstrap=settings.n_bootstrap,
                        score_moved=moved,
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
                lambda summary=summary: figures.figure1(self._figure1_data(summary)),
            )

    def _figure1_data(self, summary: HeadSummary) -> figures.Figure1Data:
        layer, head, axis = summary.layer, summary.head, self.settings.time_axis
        histories = self.run.histories
        collision, distance, llc = (histories.get(n) for n in ("collision", "distance", "llc"))
        phases = self.events.phases(layer, head, axis) if self.events is not None else []
        views, phase_note = self._phase_views(summary, phases)
        if phase_note and phases:
            self.note(f"Figure 1 — {summary.label}, panel (f)", phase_note)
        samples = self._probe if isinstance(self._probe, ProbeSamples) else None
        return figures.Figure1Data(
            run_name=self.run.name,
            summary=summary,
            fits={
                name: fit for (fl, fh, name), fit in self.fits.items() if (fl, fh) == (layer, head)
            },
            scores=collision.for_head(layer, head) if collision is not None else None,
            distances=distance.for_head(layer, head) if distance is not None else None,
            llc_head=llc.for_component(llc_component(layer, head)) if llc is not None else None,
            llc_model=llc.for_component(WHOLE_MODEL) if llc is not None else None,
            distance_observable=self.settings.distance_observable,
            thresholds=self.run.thresholds,
            events=self.events.for_head(layer, head, axis) if self.events is not None else (),
            events_source=self.events.source if self.events is not None else "",
            phases=phases,
            phase_views=views,
            phase_note=phase_note,
            box=self._box(),
            sample=(
                f"frame {samples.frames[0]}, {samples.contacts[0]} contacts"
                if samples is not None
                else ""
            ),
        )

    def _box(self) -> tuple[float, float]:
        simulation = self.run.simulation
        return simulation.box_width, simulation.box_height

    def _phase_views(
        self, summary: HeadSummary, phases: Sequence[Phase]
    ) -> tuple[list[figures.PhaseView], str]:
        """The head's attention at one checkpoint in each phase, and what is missing, in words.

        The checkpoint of a phase is the run's checkpoint (scheduled ones, ``last.ckpt``)
        closest, on a log scale, to the middle of the phase.
        """
        if not phases:
            return [], "the detector found no phase by height for this head"
        if not self.settings.checkpoint:
            return [], "skipped (--no_checkpoint)"
        try:
            samples = self.probe()
            collision = self.run.history("collision").for_head(summary.layer, summary.head)
        except Unavailable as reason:
            return [], str(reason)
        candidates = dict(scheduled_checkpoints(self.run))
        with contextlib.suppress(Unavailable):
            last = self.checkpoints.get(self.run)
            candidates.setdefault(last.step, last.path)
        end_of_training = max([collision.last_step(), *candidates])
        views, missing = [], []
        for phase in phases:
            # The last phase lasts to the end of training: last.ckpt is in it.
            end = phase.end_step if phase.end_step is not None else end_of_training + 1
            inside = [step for step in candidates if phase.start_step <= step < end]
            if not inside:
                missing.append(f"{phase.name} (steps {phase.start_step} to {end - 1})")
                continue
            middle = math.sqrt(max(phase.start_step, 1) * max(end - 1, 1))
            step = min(inside, key=lambda s: abs(math.log(max(s, 1) / middle)))
            try:
                snapshot = attention_snapshot(self.run, samples, self.checkpoints, candidates[step])
            except Unavailable as reason:
                missing.append(f"{phase.name} ({reason})")
                continue
            views.append(
                figures.PhaseView(
                    phase=phase,
                    step=step,
                    time=self._time_of(collision, step),
                    panel=AttentionPanel(
                        positions=snapshot.positions[0],
                        radii=snapshot.radii[0],
                        attention=snapshot.attention[0, summary.layer, summary.head],
                        contacts=snapshot.contacts[0] if snapshot.contacts is not None else None,
                        title="",
                    ),
                )
            )
        if not missing:
            return views, ""
        return views, (
            "no checkpoint in the " + "; ".join(missing) + " (the run's checkpoints: "
            f"{CHECKPOINT_DIR}/{SCHEDULED_CHECKPOINT_GLOB}, saved by ScheduledCheckpoint, and "
            f"{LAST_CHECKPOINT})"
        )

    def _time_of(self, history: History, step: int) -> float:
        """A step on the report's time axis, interpolated between the history's rows."""
        if self.settings.time_axis == "step":
            return float(step)
        steps, times = history.floats("step"), history.floats("lr_integral")
        keep = np.isfinite(steps) & np.isfinite(times)
        order = np.argsort(steps[keep])
        return float(np.interp(step, steps[keep][order], times[keep][order]))

    def figure3(self) -> None:
        """Figure 3 from the run's checkpoint."""
        examples = example_heads(self.summaries)
        for head_class, summary in examples.items():
            if summary is None:
                self.note("Figure 3", f"no {head_class} head to show")

        def draw() -> Any:
            snapshot = attention_snapshot(self.run, self.probe(), self.checkpoints)
            return figures.figure3(self.run.name, snapshot, examples, self._box())

        self.save(f"Figure 3 — {self.run.name}", f"figure3_{self.run.name}.png", draw)

    def llc_curves(self) -> None:
        """Per-head LLC curves."""

        def draw() -> Any:
            return figures.llc_curves(
                self.run.name,
                self.run.history("llc"),
                self.summaries,
                figures.TIME_LABELS[self.settings.time_axis],
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
    figure2_above_uniform: bool = False,
    llc_file: str | None = None,
) -> ReportResult:
    """Write the report of one or several runs into ``out_dir``.

    Args:
        run_dirs: Run directories made by ``lit-emergence fit`` (e.g. five seeds).
        out_dir: Where the figures, tables and ``report.md`` go (created).
        time_axis: ``"gradient_flow"`` (``lr_integral``, the theory's clock) or ``"step"``.
        n_bootstrap: Block-bootstrap replicates per power-law fit (0: Jacobian errors only).
        observables: Which per-head trajectories to fit (names in
            :data:`lit_emergence.records.schema.OBSERVABLES`); the first attention-distance
            one is Figure 1's panels (b) and (c) (``query_spearman`` if none is fitted).
        checkpoint: Load each run's checkpoints for Figure 3, Figure 1's attention per phase
            and, with several runs, to line up their heads with the first run's (off: skip
            them all).
        figure1_heads: Figure 1 for this many of each run's best heads.
        quiet: ``True`` hides the progress bars, ``False`` shows them, ``None`` shows them on
            a terminal only.
        warn: Called with each problem (and each skipped path) as it is found, and when a
            run's data is re-simulated (default: nothing; every problem is also in the result
            and in ``report.md``).
        rebuild_probe: For a run whose saved probe set is missing, re-simulate its data from
            ``config.yaml`` to draw Figure 3 (off: that run's Figure 3 is not drawn and the
            reason says to pass ``--rebuild_probe``).
        figure2_above_uniform: Figure 2 shows ``(score - u) / (1 - u)``, ``u`` each run's
            uniform-attention score on its probe set (``heads.csv`` has both scores either way).
        llc_file: Each run's LLC history, relative to its directory, instead of
            ``emergence/llc.csv`` (e.g. ``llc/llc_calibrated.csv`` from ``lit-emergence llc
            --out``): the LLC panels, curves and the LLC-through-emergence table read it.

    Returns:
        The :class:`ReportResult`.

    Raises:
        NotARunError: If no path is a usable run (the message gives every reason).
        MissingHistoryError: If ``llc_file`` is given and no run has it in usable form
            (before anything is written).
        ValueError: On an unknown time axis or observable.
    """
    if time_axis not in figures.TIME_LABELS:
        raise ValueError(f"time_axis must be 'gradient_flow' or 'step', got {time_axis!r}")
    unknown = [name for name in observables if name not in OBSERVABLE_BY_NAME]
    if unknown:
        raise ValueError(f"unknown observables {unknown}; choose from {sorted(OBSERVABLE_BY_NAME)}")
    settings = _Settings(
        out_dir=Path(out_dir),
        time_axis=time_axis,
        observables=tuple(OBSERVABLE_BY_NAME[name] for name in observables),
        n_bootstrap=n_bootstrap,
        quiet=quiet,
        checkpoint=checkpoint,
        rebuild_probe=rebuild_probe,
        warn=warn or (lambda message: None),
    )
    warn = settings.warn
    runs, skipped = load_runs(run_dirs, llc_file)
    runs = [run.on(time_axis) for run in runs]  # every history's `t` on the chosen axis
    for problem in skipped:
        warn(f"skipping {problem.run}: {problem.reason}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out, skipped=skipped, problems=list(skipped))
    run_table: list[dict[str, Any]] = []
    summaries_by_run: dict[str, list[HeadSummary]] = {}
    exponent_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    phase_rows: list[dict[str, Any]] = []
    llc_windows: list[HeadLLCWindow] = []
    counts: list[tuple[str, dict[str, list[int]]]] = []
    uniform: dict[str, float] = {}
    # One load per checkpoint for Figures 1 and 3 and the alignment together.
    checkpoints = CheckpointCache()

    for run in tqdm(runs, desc="runs", unit="run", disable=quiet):
        reporter = _RunReporter(run, settings, checkpoints)
        uniform[run.name] = reporter.uniform
        missing_head = _never_developed(run, reporter.summaries)
        if missing_head is not None:
            reporter.problems.append(missing_head)
        reporter.fit_all(with_checkpoint=checkpoint and run.checkpoint is not None)
        if checkpoint and run.checkpoint is None:
            reporter.note("Figure 3", "no checkpoint in checkpoints/")
        reporter.figure1(figure1_heads)
        reporter.llc_curves()
        result.figures.extend(reporter.figures)
        result.captions.update(reporter.captions)
        result.problems.extend(reporter.problems)
        for problem in reporter.problems:
            warn(str(problem))
        result.runs.append(run.name)
        summaries_by_run[run.name] = reporter.summaries
        fit_records = {key: fit.record() for key, fit in reporter.fits.items()}
        exponent_rows.extend(fit_records.values())
        if reporter.events is not None:
            event_rows.extend(reporter.events.records())
        phase_rows.extend(
            phase_records(
                run,
                reporter.summaries,
                reporter.events,
                fit_records,
                settings.distance_observable.name,
                settings.time_axis,
            )
        )
        llc_windows.extend(head_windows(run, reporter.summaries, reporter.events))
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
    _cross_run_figures(
        runs,
        counts,
        llc_windows,
        out,
        time_axis,
        result,
        uniform if figure2_above_uniform else None,
    )
    alignment_section = _align_heads(
        runs, summaries_by_run, checkpoints if checkpoint else None, out, result
    )
    for problem in result.problems[already_warned:]:
        warn(str(problem))
    result.figures.sort(key=lambda item: _reading_order(item[0]))
    head_rows = head_records(s for summaries in summaries_by_run.values() for s in summaries)
    exponent_rows = strongest_first(exponent_rows)
    result.tables.update(heads=head_rows, exponents=exponent_rows, events=event_rows)
    result.columns.update(
        heads=list(HEAD_COLUMNS),
        exponents=list(EXPONENT_COLUMNS),
        events=list(EVENT_TABLE_COLUMNS),
    )
    result.files.update(write_tables(out, head_rows, exponent_rows, event_rows))
    llc_window_rows = llc_window_records(llc_windows)
    for name, columns, rows, markdown in (
        ("phases", PHASE_COLUMNS, phase_rows, phases_markdown),
        ("llc_windows", LLC_WINDOW_COLUMNS, llc_window_rows, llc_windows_markdown),
    ):
        result.tables[name] = rows
        result.columns[name] = list(columns)
        result.files[f"{name}.csv"] = write_csv(out / f"{name}.csv", columns, rows)
        result.files[f"{name}.md"] = out / f"{name}.md"
        result.files[f"{name}.md"].write_text(markdown(rows))
    for _, path in result.figures:
        result.files[path.name] = path
    result.files["report.md"] = write_document(
        out,
        runs=run_table,
        figures=result.figures,
        captions=result.captions,
        head_rows=head_rows,
        exponent_rows=exponent_rows,
        event_rows=event_rows,
        phase_rows=phase_rows,
        llc_window_rows=llc_window_rows,
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
    llc_windows: Sequence[HeadLLCWindow],
    out: Path,
    time_axis: TimeAxis,
    result: ReportResult,
    uniform: Mapping[str, float] | None,
) -> None:
    """Figures 2 and 5 over every run with collision scores, and the LLC through emergence.

    ``uniform`` (run name -> uniform-attention score) puts Figure 2 above the uniform level.
    """
    histories = [
        (run.name, run.histories["collision"]) for run in runs if "collision" in run.histories
    ]
    for title, file_name, draw in (
        (
            "Figure 2 — collision scores of every head over training",
            "figure2_score_histogram.png",
            lambda: figures.figure2(
                histories, figures.TIME_LABELS[time_axis], runs[0].thresholds, uniform=uniform
            ),
        ),
        (
            "Figure 5 — true and partial heads per block",
            "figure5_heads_per_block.png",
            lambda: figures.figure5(counts),
        ),
        (
            "LLC through emergence — each collision head, every run",
            "llc_emergence.png",
            lambda: figures.llc_emergence(llc_windows, figures.TIME_LABELS[time_axis]),
        ),
    ):
        try:
            drawn = draw()
        except Unavailable as reason:
            result.problems.append(Problem("", title, str(reason)))
            continue
        if isinstance(drawn, figures.Captioned):
            result.captions[title] = drawn.caption
            drawn = drawn.figure
        path = out / file_name
        figures.save(drawn, str(path))
        result.figures.append((title, path))
    if uniform is not None:
        for name, _ in histories:
            if not math.isfinite(uniform.get(name, math.nan)):
                result.problems.append(
                    Problem(
                        name,
                        "Figure 2 (above uniform)",
                        "left out: no uniform-attention score without the run's probe set",
                    )
                )


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
