"""The report's Figure 1: one head over training, as in the paper's Figure 1.

Collision score, attention-distance observable (raw and its approach on log-log axes, with
the fitted regimes), the LLC of the head beside the whole model's, the score per band of query
height, and the head's attention on particles at one step in each of its phases by height.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # written to files, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lit_emergence.plotting import (
    AttentionPanel,
    draw_attention,
)
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import History
from lit_emergence.records.schema import (
    OBSERVABLE_BY_NAME,
    Observable,
    band_columns,
)
from lit_emergence.report.events import Phase
from lit_emergence.report.figure_style import (
    _PHASE_COLOURS,
    _WINDOW_COLOUR,
    DPI,
    EVENT_STYLES,
    TIME_LABELS,
    Captioned,
    _crop,
    _draw_fits,
    _empty,
    _events,
    _fitted_models,
    _frameless,
    _legend,
    _log_time_axis,
    _positive,
    _series,
    _step_axis,
    _threshold_handles,
    _thresholds,
)
from lit_emergence.report.fits import HeadFit
from lit_emergence.report.heads import HeadSummary


def _score_panel(
    ax: Axes, scores: History | None, head_fit: HeadFit | None, thresholds: tuple[float, float]
) -> None:
    if scores is None or not len(scores):
        _empty(ax, "no collision history")
        return
    for column, label in (
        ("score", "score (radius-based)"),
        ("strict", "strict (contacts)"),
        ("impact", "impact queries"),
    ):
        tt, value = _series(scores, column)
        main = column == "score"
        if tt.size:
            ax.plot(
                tt,
                value,
                "-o" if main else "-",
                markersize=2.5,
                linewidth=1.4 if main else 0.8,
                alpha=1.0 if main else 0.6,
                label=label,
            )
    _draw_fits(ax, head_fit)
    _thresholds(ax, thresholds)
    ax.set_ylim(0.0, 1.02)
    _legend(ax, "center left", head_fit)


def _band_panel(
    ax: Axes,
    scores: History | None,
    thresholds: tuple[float, float],
    phases: Sequence[Phase],
) -> int:
    """The score per band of query height.

    Returns:
        ``(bands, drawn)``: the number of bands the box is divided into, and how many of them
        have a score (a band without a probe query has none); ``(0, 0)`` without bands.
    """
    columns = band_columns(scores.columns) if scores is not None and len(scores) else []
    drawn = 0
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(1, len(columns))))
    for band, (column, colour) in enumerate(zip(columns, colours, strict=True)):
        tt, value = _series(scores, column)
        if not tt.size:
            continue
        low, high = band / len(columns), (band + 1) / len(columns)
        where = " (floor)" if band == 0 else " (top)" if band == len(columns) - 1 else ""
        ax.plot(
            tt,
            value,
            "-o",
            markersize=2,
            linewidth=1.2,
            color=colour,
            label=f"band {band}{where}: {low:.2g}–{high:.2g} of the box height",
        )
        drawn += 1
    if not drawn:
        _empty(ax, "no score_band columns in collision_scores.csv")
        return 0, 0
    if scores is not None:
        last = float(np.nanmax(scores.t))
        for phase in phases:
            ax.axvspan(
                phase.start,
                min(phase.end, last),
                color=_PHASE_COLOURS.get(phase.name, "0.8"),
                alpha=0.12,
                linewidth=0,
                label=f"{phase.name}: {phase.description}",
            )
    _thresholds(ax, thresholds)
    ax.set_ylim(0.0, 1.02)
    _legend(ax, "upper left")
    return len(columns), drawn


def _distance_panels(
    ax_raw: Axes,
    ax_loglog: Axes,
    distances: History | None,
    head_fit: HeadFit | None,
    observable: Observable,
) -> tuple[float, str] | None:
    """The observable over training and ``|O - O∞|`` on log-log axes.

    Returns:
        ``(O∞, where it comes from)``, or ``None`` if nothing was drawn.
    """
    tt, value = _series(distances, observable.column)
    if not tt.size:
        reason = f"no {observable.column} in {distances.path.name if distances else 'history'}"
        _empty(ax_raw, reason)
        _empty(ax_loglog, reason)
        return None
    ax_raw.plot(tt, value, "-o", markersize=2.5, color="black", linewidth=1.2, label="measured")
    _draw_fits(ax_raw, head_fit)
    _legend(ax_raw, "best", head_fit)
    # Every curve is drawn as |O - O_inf| with one O_inf (the power law's asymptote), so the
    # curves are the models' predictions of O transformed exactly like the data.
    reference_fit = next(iter(_fitted_models(head_fit)), None)
    reference = reference_fit.offset if reference_fit is not None else float(value[-1])
    source = "the power law's asymptote" if reference_fit is not None else "the last value"
    # An asymptote farther from the last value than the whole measured range is a degenerate
    # fit (exponent ~0, limit at infinity, e.g. a curve that overshoots and comes back): its
    # |O - O∞| would be a flat line at |O∞|, so the data are drawn against their last value.
    span = float(np.ptp(value))
    if reference_fit is not None and abs(reference - float(value[-1])) > span:
        source = f"the last value; the power law's asymptote {reference:.3g} is off the data"
        reference, reference_fit = float(value[-1]), None
    distance_to_limit = np.abs(value - reference)
    drawable = distance_to_limit > 0
    ax_loglog.loglog(
        tt[drawable],
        distance_to_limit[drawable],
        "o",
        markersize=3,
        color="black",
        label=f"measured, O∞ = {reference:.3g} ({source})",
    )
    if reference_fit is not None:
        _draw_fits(ax_loglog, head_fit, reference=reference)
    _legend(ax_loglog, "lower left")
    return reference, source


def _llc_panel(
    ax: Axes, label: str, llc_head: History | None, llc_model: History | None
) -> dict[str, float]:
    """The head's and the whole model's LLC, each divided by its largest estimate.

    Returns:
        Name -> the largest estimate it was divided by, for every curve drawn.
    """
    largest: dict[str, float] = {}
    for name, history, style, colour in (
        (label, llc_head, "-o", "tab:red"),
        ("whole model", llc_model, "--s", "0.35"),
    ):
        tt, mean, std = _positive(
            *(
                (history.t, history.floats("llc_mean"), history.floats("llc_std"))
                if history is not None and len(history)
                else (np.empty(0), np.empty(0), np.empty(0))
            )
        )
        scale = float(np.max(np.abs(mean))) if mean.size else 0.0
        if scale <= 0:
            continue
        largest[name] = scale
        ax.errorbar(
            tt,
            mean / scale,
            yerr=std / scale,
            fmt=style,
            markersize=3.5,
            capsize=2,
            color=colour,
            linewidth=1.2,
            label=f"{name}{' (weight-refined)' if history is llc_head else ''}, "
            f"largest {scale:.3g}",
        )
    if largest:
        ax.set_ylabel("LLC ÷ its largest estimate")
        _legend(ax, "upper left")
    else:
        _empty(ax, "no LLC history")
    return largest


@dataclass(frozen=True, eq=False)
class PhaseView:
    """A head's attention at one step of one of its phases (Figure 1's panel (f)).

    Attributes:
        phase: The phase.
        step: The step of the checkpoint drawn.
        time: That step on the figure's time axis.
        panel: The attention on the free-fall sample (its title is set by :func:`figure1`).
    """

    phase: Phase
    step: int
    time: float
    panel: AttentionPanel


@dataclass(frozen=True, eq=False)
class Figure1Data:
    """Everything :func:`figure1` draws for one head.

    Attributes:
        run_name: Run name (title).
        summary: The head's final values.
        fits: Fits of this head by observable name.
        scores: The head's rows of the collision history.
        distances: The head's rows of the attention-distance history.
        llc_head: The head's rows of the LLC history.
        llc_model: The whole model's rows of the LLC history.
        distance_observable: The attention-distance observable of panels (b) and (c).
        thresholds: ``(true, partial)`` score thresholds.
        events: ``(time, name)`` of the head's emergence events.
        events_source: ``"recorded"`` or ``"replayed"`` (for the caption).
        phases: The head's phases by height.
        phase_views: The head's attention at one step in each phase (may be empty).
        phase_note: Why there is no attention panel, if there is none.
        box: ``(width, height)`` of the simulation box.
        sample: The free-fall sample drawn on, in words (for the caption).
    """

    run_name: str
    summary: HeadSummary
    fits: Mapping[str, HeadFit]
    scores: History | None
    distances: History | None
    llc_head: History | None
    llc_model: History | None
    distance_observable: Observable = OBSERVABLE_BY_NAME["query_spearman"]
    thresholds: tuple[float, float] = (0.9, 0.5)
    events: Sequence[tuple[float, str]] = ()
    events_source: str = ""
    phases: Sequence[Phase] = ()
    phase_views: Sequence[PhaseView] = ()
    phase_note: str = ""
    box: tuple[float, float] = (1.0, 1.0)
    sample: str = ""


def _phase_panels(
    fig: Figure, cell: SubplotSpec, data: Figure1Data, num_bands: int, flow: bool
) -> None:
    """Panel (f): the head's attention at each phase's step, side by side in ``cell``.

    ``flow``: the time axis is gradient-flow time (each title gives the step's ``t`` too).
    """
    grid = cell.subgridspec(1, len(data.phase_views), wspace=0.05)
    height = data.box[1]
    for index, view in enumerate(data.phase_views):
        ax = fig.add_subplot(grid[0, index])
        panel = dataclasses.replace(
            view.panel,
            levels=[height * k / num_bands for k in range(1, num_bands)],
            title=f"{'(f) ' if index == 0 else ''}{view.phase.name}\nstep {view.step}"
            + (f" (t = {view.time:.3g})" if flow else ""),
        )
        draw_attention(ax, panel, data.box, contacts_on_top=True)
        _frameless(ax)


def _range_text(t: np.ndarray, y: np.ndarray) -> str:
    return f"from {y[0]:.2f} (t = {t[0]:.2g}) to {y[-1]:.2f}" if y.size else "not measured"


def _fit_text(head_fit: HeadFit | None, what: str) -> str:
    if head_fit is None or head_fit.power_law is None:
        reason = "; ".join(head_fit.notes) if head_fit is not None and head_fit.notes else ""
        return f", not fitted ({reason[:120]})" if reason else ", not fitted"
    text = f", with a power law (α = {head_fit.power_law.exponent:.2g})"
    if head_fit.broken is not None:
        alpha1, alpha2 = head_fit.broken.exponents
        text += (
            f" and a broken power law (α₁ = {alpha1:.2g}, α₂ = {alpha2:.2g}, "
            f"t_break = {head_fit.broken.breakpoint:.2g})"
        )
    preferred = head_fit.comparison.preferred.replace("_", " ") if head_fit.comparison else ""
    return f"{text} fitted to {what} over the shaded window" + (
        f" (AICc prefers the {preferred})" if preferred else ""
    )


def figure1(data: Figure1Data) -> Captioned:
    """The paper's Figure 1 for one head.

    Panels, on one time axis (gradient-flow time with the optimizer step on top, or steps):
    (a) the collision scores, (b) the attention-distance correlation, (c) its approach to the
    final value on log-log axes with the fitted regimes, (d) the LLC of the head and of the
    whole model, each divided by its largest estimate, (e) the score per band of query height
    with the head's phases shaded, and (f) the head's attention on a free-fall sample at one
    step in each phase (only when the run has checkpoints there; without, (e) takes the whole
    width). Emergence events are vertical lines, named in the figure's legend at the bottom
    with the other lines every panel shares. The measurements before any curve moved (the
    warm-up's first decades) are cropped, and the caption says how many.

    Args:
        data: What to draw.

    Returns:
        The figure and its caption, one sentence per panel.

    Raises:
        Unavailable: If neither the collision nor the distance history has the head.
    """
    summary, label = data.summary, data.summary.label
    scores, distances = data.scores, data.distances
    # The history whose rows give the time axis (and the steps on top of it).
    reference = scores if scores is not None and len(scores) else distances
    if reference is None or not len(reference):
        raise Unavailable(f"no collision or distance history for {label}")
    observable = data.distance_observable
    views = data.phase_views
    fig = plt.figure(figsize=(12.0, 12.0), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=(1.0, 1.0, 1.2 if views else 1.0))
    ax_score = fig.add_subplot(grid[0, 0])
    time_axes = [
        ax_score,
        fig.add_subplot(grid[0, 1], sharex=ax_score),
        fig.add_subplot(grid[1, 0], sharex=ax_score),
        fig.add_subplot(grid[1, 1], sharex=ax_score),
        fig.add_subplot(grid[2, 0] if views else grid[2, :], sharex=ax_score),
    ]
    _, ax_distance, ax_loglog, ax_llc, ax_bands = time_axes
    time_axis = reference.axis
    time_label = TIME_LABELS[time_axis]
    score_fit, distance_fit = data.fits.get("score"), data.fits.get(observable.name)
    captions: list[str] = []

    _score_panel(ax_score, scores, score_fit, data.thresholds)
    ax_score.set_ylabel("collision-detection score")
    ax_score.set_title("(a) collision-detection score", fontsize=9)
    t_score, y_score = _series(scores, "score")
    captions.append(
        f"(a) Collision-detection score of {label} (dots: the radius-based score; thin lines: "
        "the strict score on ground-truth contacts and the score on impact queries), "
        f"{_range_text(t_score, y_score)}{_fit_text(score_fit, 'its rise')}."
    )

    limit = _distance_panels(ax_distance, ax_loglog, distances, distance_fit, observable)
    ax_distance.set_ylabel(observable.label, fontsize=8)
    ax_distance.set_title(f"(b) attention-distance correlation: {observable.label}", fontsize=9)
    ax_loglog.set_ylabel("|O − O∞|  (O: panel b)", fontsize=8)
    ax_loglog.set_title("(c) its approach to the final value, log-log axes", fontsize=9)
    t_distance, y_distance = _series(distances, observable.column)
    captions.append(
        f"(b) The attention-distance correlation of {label}, {observable.label}, "
        f"{_range_text(t_distance, y_distance)}."
    )
    captions.append(
        "(c) Its distance to the final value, |O − O∞| on log-log axes"
        + (f" (O∞ = {limit[0]:.3g}, {limit[1]})" if limit else "")
        + f"{_fit_text(distance_fit, 'its approach')}."
    )

    largest = _llc_panel(ax_llc, label, data.llc_head, data.llc_model)
    ax_llc.set_title("(d) local learning coefficient, normalised", fontsize=9)
    captions.append(
        (
            f"(d) Local learning coefficient of {label} (weight-refined) and of the whole model, "
            "each divided by its largest estimate ("
            + ", ".join(f"{name}: {value:.3g}" for name, value in largest.items())
            + "), error bars the chains' standard deviation."
        )
        if largest
        else "(d) No LLC was measured."
    )

    num_bands, with_scores = _band_panel(ax_bands, scores, data.thresholds, data.phases)
    ax_bands.set_ylabel("collision score per band")
    ax_bands.set_title("(e) collision score per band of query height", fontsize=9)
    if data.phases:
        phase_text = "; shaded: " + "; ".join(
            f"the {p.name} found by the detector ({p.description}, from step {p.start_step}"
            + (f" to {p.end_step})" if p.end_step is not None else " on)")
            for p in data.phases
        )
    else:
        phase_text = "; the detector found no phase by height for this head"
    empty = f"; {num_bands - with_scores} without a probe query" if with_scores < num_bands else ""
    captions.append(
        f"(e) Collision score of {label} per band of query height ({num_bands} equal bands, "
        f"band 0 at the floor{empty}){phase_text}."
        if num_bands
        else "(e) The collision history has no score per band of query height."
    )

    if views:
        _phase_panels(fig, grid[2, 1], data, num_bands, time_axis == "gradient_flow")
        ax_bands.plot(
            [view.time for view in views],
            [1.0] * len(views),
            "v",
            color="black",
            markersize=6,
            clip_on=False,
            zorder=5,
            label="steps drawn in (f)",
        )
        _legend(ax_bands, "upper left")
        steps = ", ".join(f"step {v.step} ({v.phase.name})" for v in views)
        captions.append(
            f"(f) Attention of {label} on the free-fall sample ({data.sample}) at {steps}: "
            "line opacity = attention weight, red = contacts, dashed = band edges"
            + (f"; {data.phase_note}." if data.phase_note else ".")
        )
    else:
        captions.append(f"(f) Attention on particles per phase not drawn: {data.phase_note}.")

    handles: dict[str, Line2D] = {}
    for ax in time_axes:
        _log_time_axis(ax)
        handles.update(_events(ax, data.events))
    curves = [(t_score, y_score), (t_distance, y_distance)]
    curves += [_series(scores, c) for c in band_columns(scores.columns)] if scores else []
    breaks = [f.broken.breakpoint for f in (score_fit, distance_fit) if f and f.broken]
    marks = [*(time for time, _ in data.events), *breaks]
    left, dropped = _crop([c for c in curves if c[0].size], marks)
    right = max((float(t[-1]) for t, _ in curves if t.size), default=1.0) * 1.3
    if left is not None:
        ax_score.set_xlim(left, right)
    for ax in (ax_llc, ax_bands):
        ax.set_xlabel(time_label, fontsize=8)
    if time_axis == "gradient_flow":
        for ax in time_axes[:2]:
            _step_axis(ax, reference)
    legend_handles: list[Line2D | Patch] = [
        *(handles[name] for name in EVENT_STYLES if name in handles),
        *(h for name, h in handles.items() if name not in EVENT_STYLES),
        *_threshold_handles(data.thresholds),
        Patch(color=_WINDOW_COLOUR, alpha=0.15, label="window of the fits"),
    ]
    fig.legend(
        handles=legend_handles, loc="outside lower center", ncol=4, fontsize=7, frameon=False
    )
    fig.suptitle(
        f"{data.run_name}: head {label} ({summary.head_class or 'unclassified'}, "
        f"final score {summary.score:.2f})",
        fontsize=11,
    )
    source = f" ({data.events_source})" if data.events_source else ""
    general = (
        f"Vertical lines: the emergence detector's events{source}, named in the legend; "
        f"bottom axis: {time_label}"
        + ("; top axis: optimizer step" if time_axis == "gradient_flow" else "")
        + (
            f"; the time axis starts at {left:.2g}, leaving out the {dropped} earlier "
            "measurements, before any curve had moved"
            if left is not None
            else ""
        )
        + "."
    )
    return Captioned(fig, " ".join([*captions, general]))
