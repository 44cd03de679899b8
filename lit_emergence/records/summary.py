"""The closing summary of a run: what emerged, in ``RUN_DIR/summary.md`` and ``summary.json``.

:class:`~lit_emergence.callbacks.RunSummary` fills a :class:`FitSummary` at the end of every
``fit`` and writes it twice, atomically: as Markdown for people (``summary.md``, the text also
printed on the console) and as JSON for programs (``summary.json``; ``lit-emergence seeds``
tabulates the seeds from it with :func:`seeds_table`). Neither file is needed by any reader of
the run: both are derived from the histories, the detector's events and the logged losses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lit_emergence.records.files import replace_text
from lit_emergence.records.schema import SUMMARY_FILE, SUMMARY_JSON


@dataclass(frozen=True)
class HeadOutcome:
    """One attention head at the end of a run.

    Attributes:
        label: Display name (``L1H6``).
        layer: Layer of the head.
        head: Head index within the layer.
        head_class: ``"true"``, ``"partial"`` or ``"none"`` by its last score.
        score: Its last collision-detection score.
        since_step: First step of the last unbroken run of measurements at or above its class's
            threshold (when it became, for good so far, what it is); None for ``"none"``.
        warning: The detector's earliest warning for it (``onset``, ``power_law`` or
            ``partial``), or None (no warning, or no detector).
        warning_step: The step at which that warning was flagged.
        lead_steps: For a true head with a warning: the step it reached the true threshold (the
            detector's ``true`` event) minus ``warning_step``.
        llc: Its weight-refined LLC at the last LLC measurement, or None.
        llc_std: Standard error of ``llc`` over chains, or None.
    """

    label: str
    layer: int
    head: int
    head_class: str
    score: float
    since_step: int | None = None
    warning: str | None = None
    warning_step: int | None = None
    lead_steps: int | None = None
    llc: float | None = None
    llc_std: float | None = None


@dataclass(frozen=True)
class LLCOutcome:
    """The LLC of the whole model at the last LLC measurement.

    Attributes:
        step: Step of the measurement.
        mean: Mean over chains.
        std: Its spread over chains.
        verdict: The sampler diagnostics' verdict (``ok``, ``not-converged``, ...), or ``""``.
    """

    step: int
    mean: float
    std: float
    verdict: str = ""


@dataclass(frozen=True)
class FitSummary:
    """What a ``fit`` produced, in one record (see the module docstring).

    Attributes:
        run_dir: The run directory, as given to the Trainer.
        name: The run's name (the directory's name).
        step: Optimizer steps done when the fit ended.
        wall_seconds: Duration of this fit (one attempt of a resumed run), or None.
        resumed_from: The step this attempt resumed from (None: started at step 0).
        true_threshold: Score of a true collision head.
        partial_threshold: Score of a partial collision head.
        measured_step: Step of the last collision measurement (None: not measured).
        num_heads: Number of heads measured.
        heads: The true heads, then the partial ones, each by decreasing score.
        best: The head with the highest last score (also when none is partial).
        detector: Whether an ``EmergenceDetector`` ran.
        num_events: Events in ``emergence/events.csv``.
        llc: The LLC of the whole model at the last LLC measurement (None: not measured).
        losses: Final losses and validation errors by logged name (None: not a number).
        notes: Instruments that were absent, and anything else worth saying, one line each.
        commands: What to run next, one command line each.
        wandb_dir: The local W&B run directory (None: no W&B run).
    """

    run_dir: str
    name: str
    step: int
    wall_seconds: float | None = None
    resumed_from: int | None = None
    true_threshold: float = 0.9
    partial_threshold: float = 0.5
    measured_step: int | None = None
    num_heads: int = 0
    heads: tuple[HeadOutcome, ...] = ()
    best: HeadOutcome | None = None
    detector: bool = False
    num_events: int = 0
    llc: LLCOutcome | None = None
    losses: dict[str, float | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    wandb_dir: str | None = None

    # ----------------------------------------------------------------------------- views
    def of_class(self, head_class: str) -> list[HeadOutcome]:
        """The listed heads of one class (``"true"`` or ``"partial"``)."""
        return [h for h in self.heads if h.head_class == head_class]

    def lead_steps(self) -> list[int]:
        """Lead times of the true heads the detector warned about, in table order."""
        return [h.lead_steps for h in self.of_class("true") if h.lead_steps is not None]

    def headline(self) -> str:
        """One line: how many true and partial heads, which, and since when."""
        if self.measured_step is None:
            return "collision heads: not measured"
        true, partial = self.of_class("true"), self.of_class("partial")
        if not true and not partial:
            best = f": best {self.best.label} {self.best.score:.2f}" if self.best else ""
            return f"no collision heads yet{best}"
        parts = []
        if true:
            parts.append(f"{len(true)} true ({_heads_list(true)})")
        if partial:
            parts.append(f"{len(partial)} partial ({_heads_list(partial)})")
        return "collision heads: " + "; ".join(parts)

    # ----------------------------------------------------------------------------- text
    def markdown(self) -> str:
        """The summary as Markdown (also readable as plain text on a console)."""
        lines = [f"# {self.name}: what emerged", ""]
        ran = f"step {self.step}"
        if self.resumed_from is not None:
            ran += f", resumed from step {self.resumed_from}"
        if self.wall_seconds is not None:
            ran += f", {_duration(self.wall_seconds)}"
        lines.append(f"- run directory: `{self.run_dir}` ({ran})")
        lines.append(f"- {self._collision_line()}")
        table = self._heads_table()
        if table:
            legend = "since step: the first step of its last unbroken run at or above its class's"
            legend += " threshold"
            if self.detector:
                legend += "; lead: the step the detector saw it reach the true threshold minus"
                legend += " the step of its first warning"
            lines += ["", *table, "", f"({legend})", ""]
        lines.append(f"- {self._detector_line()}")
        lines.append(f"- {self._llc_line()}")
        if self.losses:
            losses = ", ".join(f"{k} {_number(v)}" for k, v in self.losses.items())
            lines.append(f"- final losses: {losses}")
        lines += [f"- {note}" for note in self.notes]
        if self.commands:
            lines += ["", "Next:", "", *(f"    {command}" for command in self.commands)]
        return "\n".join(lines) + "\n"

    def _collision_line(self) -> str:
        if self.measured_step is None:
            return "collision heads: not measured (no CollisionDetectionMonitor)"
        true, partial = self.of_class("true"), self.of_class("partial")
        count = (
            f"{len(true)} true, {len(partial)} partial of {self.num_heads} heads"
            f" (true: score >= {self.true_threshold:g}, partial: >= {self.partial_threshold:g})"
        )
        line = f"collision heads at step {self.measured_step}: {count}"
        if not true and not partial and self.best is not None:
            line += f"; best {self.best.label} at {self.best.score:.2f}"
        return line

    def _heads_table(self) -> list[str]:
        if not self.heads:
            return []
        llc = any(h.llc is not None for h in self.heads)
        header = ["head", "class", "score", "since step"]
        if self.detector:
            header += ["first warning", "lead (steps)"]
        if llc:
            header.append("LLC")
        rows = []
        for h in self.heads:
            row = [h.label, h.head_class, f"{h.score:.3f}", _optional(h.since_step)]
            if self.detector:
                warning = f"{h.warning} at {h.warning_step}" if h.warning is not None else "-"
                row += [warning, _optional(h.lead_steps)]
            if llc:
                row.append(_with_error(h.llc, h.llc_std))
            rows.append(row)
        return _table(header, rows)

    def _detector_line(self) -> str:
        if not self.detector:
            return "detector: not in this run (add an EmergenceDetector for events and lead times)"
        line = f"detector: {self.num_events} events in `emergence/events.csv`"
        true = self.of_class("true")
        leads = self.lead_steps()
        if true:
            warned = f"{len(leads)} of {len(true)} true heads flagged before they reached "
            warned += f"{self.true_threshold:g}"
            if leads:
                warned += f", lead {_and(str(lead) for lead in leads)} steps"
            line += f"; {warned}"
        return line

    def _llc_line(self) -> str:
        if self.llc is None:
            return "LLC: not measured (no LLCMonitor)"
        line = f"LLC at step {self.llc.step}: model {_with_error(self.llc.mean, self.llc.std)}"
        if self.llc.verdict:
            line += f" ({self.llc.verdict})"
        heads = [h for h in self.of_class("true") if h.llc is not None]
        if heads:
            line += "; true heads " + ", ".join(
                f"{h.label} {_with_error(h.llc, h.llc_std)}" for h in heads
            )
        return line

    # ----------------------------------------------------------------------------- data
    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (NaN becomes None)."""
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitSummary:
        """Rebuild a summary from :meth:`to_dict`'s data (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["heads"] = tuple(HeadOutcome(**h) for h in known.get("heads", ()))
        if known.get("best") is not None:
            known["best"] = HeadOutcome(**known["best"])
        if known.get("llc") is not None:
            known["llc"] = LLCOutcome(**known["llc"])
        for name in ("notes", "commands"):
            known[name] = tuple(known.get(name, ()))
        return cls(**known)

    def write(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write ``summary.md`` and ``summary.json`` into ``run_dir``, each atomically.

        Returns:
            The two paths, Markdown first.
        """
        run_dir = Path(run_dir)
        markdown, data = run_dir / SUMMARY_FILE, run_dir / SUMMARY_JSON
        replace_text(data, json.dumps(self.to_dict(), indent=1) + "\n")
        replace_text(markdown, self.markdown())
        return markdown, data


def read_summary(run_dir: str | Path) -> FitSummary | None:
    """The summary a finished ``fit`` wrote into ``run_dir`` (None: none, or unreadable)."""
    path = Path(run_dir) / SUMMARY_JSON
    try:
        return FitSummary.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def seeds_table(runs: Sequence[tuple[int, str | Path]]) -> str:
    """One Markdown table over the runs of several seeds, from their ``summary.json``.

    Args:
        runs: ``(seed, run_dir)`` pairs, in the order to show.

    Returns:
        The table (a run without a summary gets a row saying so).
    """
    header = ["seed", "true heads (since step)", "partial", "best", "LLC (model)", "losses"]
    rows = []
    for seed, run_dir in runs:
        summary = read_summary(run_dir)
        if summary is None:
            rows.append([str(seed), f"no summary in {run_dir}", "", "", "", ""])
            continue
        true = summary.of_class("true")
        partial = summary.of_class("partial")
        rows.append(
            [
                str(seed),
                ", ".join(f"{h.label} ({_optional(h.since_step)})" for h in true) or "none",
                ", ".join(h.label for h in partial) or "none",
                f"{summary.best.label} {summary.best.score:.2f}" if summary.best else "-",
                _with_error(summary.llc.mean, summary.llc.std) if summary.llc else "-",
                ", ".join(f"{k} {_number(v)}" for k, v in summary.losses.items() if "loss" in k)
                or "-",
            ]
        )
    return "\n".join(_table(header, rows)) + "\n"


# --------------------------------------------------------------------------------- formatting
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table whose columns are padded, so that it reads as text too."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _heads_list(heads: list[HeadOutcome]) -> str:
    return ", ".join(f"{h.label} {h.score:.2f}" for h in heads)


def _number(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _with_error(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {std:.2g}"


def _optional(value: int | None) -> str:
    return "-" if value is None else str(value)


def _and(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
