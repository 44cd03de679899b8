"""Shared look of the report's figures: colours, event and fit styles, time axes, cropping.

Used by :mod:`lit_emergence.report.figure1` and :mod:`lit_emergence.report.figures`; one place
for what every figure draws the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # written to files, never shown

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator

from lit_emergence.dynamics import ModelFit
from lit_emergence.records.run import History
from lit_emergence.report.fits import HeadFit

TIME_LABELS: dict[str, str] = {
    "gradient_flow": "gradient-flow time  t = Σ lr  (cumulative learning rate)",
    "step": "optimizer step",
}
CLASS_COLOURS: dict[str, str] = {"true": "tab:red", "partial": "tab:orange", "none": "0.65"}
CLASS_NAMES: dict[str, str] = {
    "true": "true collision head",
    "partial": "partial collision head",
    "none": "non-collision head",
}
#: Resolution of the report's figures (dots per inch).
DPI = 160
_FIT_STYLES = {"power_law": ("tab:blue", "--"), "broken_power_law": ("tab:green", "-.")}
_WINDOW_COLOUR = "tab:blue"
#: Colour, line style and legend text of each emergence event's vertical line.
EVENT_STYLES: dict[str, tuple[str, str, str]] = {
    "onset": ("tab:purple", ":", "onset: score left its initial level"),
    "power_law": ("tab:purple", "-.", "power law: start of the detector's window"),
    "partial": (CLASS_COLOURS["partial"], "-", "partial: score ≥ partial threshold"),
    "true": (CLASS_COLOURS["true"], "-", "true: score ≥ true threshold"),
    "phase": ("tab:cyan", "-", "first phase begins (true low in the box only)"),
    "phase_end": ("tab:cyan", "--", "first phase ends"),
}
#: Shading of each phase by height in the band panel.
_PHASE_COLOURS = {"first phase": "tab:cyan", "second phase": "tab:green"}
# A curve has moved once it is this fraction of its total range away from its first value
# (Figure 1 crops the measurements before any curve has).
_MOVED_FRACTION = 0.05
# Margin left of the first change when cropping, in decades.
_CROP_MARGIN_DECADES = 0.5


class Captioned(NamedTuple):
    """A figure and its caption (printed under it in ``report.md``)."""

    figure: Figure
    caption: str


def _positive(t: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Points drawable on a log time axis: t > 0 and finite everywhere."""
    keep = np.isfinite(t) & (t > 0)
    for value in values:
        keep &= np.isfinite(value)
    order = np.argsort(t[keep], kind="stable")
    return (t[keep][order], *(value[keep][order] for value in values))


def _fit_label(fit: ModelFit) -> str:
    if fit.model == "power_law":
        return f"power law α = {fit.params['alpha']:.3g} ± {fit.error('alpha'):.2g}"
    alpha1, alpha2 = fit.params["alpha1"], fit.params["alpha2"]
    return f"broken power law α₁ = {alpha1:.3g}, α₂ = {alpha2:.3g}"


def _fitted_models(head_fit: HeadFit | None) -> list[ModelFit]:
    if head_fit is None:
        return []
    return [fit for fit in (head_fit.power_law, head_fit.broken) if fit is not None]


def _draw_fits(ax: Axes, head_fit: HeadFit | None, reference: float | None = None) -> None:
    """Draw the fitted curves over their window (as ``|O - reference|`` if given) and shade it.

    The power law and the broken power law are always drawn, the broken one's breakpoint as a
    labelled vertical line; the AICc-preferred model too when it is neither (e.g. a logistic
    jump), so the reader sees what the comparison preferred.
    """
    if head_fit is None or head_fit.window is None:
        return
    lo, hi = head_fit.window
    ax.axvspan(lo, hi, color=_WINDOW_COLOUR, alpha=0.06, linewidth=0)
    grid = np.geomspace(lo, hi, 200)
    models = _fitted_models(head_fit)
    comparison = head_fit.comparison
    if comparison is not None and comparison.preferred not in _FIT_STYLES:
        models.append(comparison.fits[comparison.preferred])
    for fit in models:
        colour, style = _FIT_STYLES.get(fit.model, ("0.3", ":"))
        curve = fit.predict(grid)
        if reference is not None:
            curve = np.abs(curve - reference)
        label = _fit_label(fit) if fit.model in _FIT_STYLES else f"{fit.model} (AICc-preferred)"
        ax.plot(grid, curve, color=colour, linestyle=style, linewidth=1.6, label=label)
        if fit.model == "broken_power_law":
            ax.axvline(
                fit.params["t_break"],
                color=colour,
                linewidth=0.9,
                linestyle=":",
                label=f"t_break = {fit.params['t_break']:.3g} (broken power law)",
            )


def _comparison_note(head_fit: HeadFit | None) -> str | None:
    """Two short lines on the model comparison and the window (a legend title)."""
    if head_fit is None:
        return None
    if head_fit.comparison is None:
        return "not fitted: " + "; ".join(head_fit.notes)[:80] if head_fit.notes else None
    delta = head_fit.delta_aicc_power_law
    text = f"AICc prefers {head_fit.comparison.preferred.replace('_', ' ')}"
    if math.isfinite(delta) and delta > 0:
        text += f" (power law +{delta:.1f})"
    return f"{text}\nwindow: {head_fit.window_source}"


def _legend(ax: Axes, loc: str = "best", head_fit: HeadFit | None = None) -> None:
    legend = ax.legend(fontsize=6.5, loc=loc, title=_comparison_note(head_fit), framealpha=0.85)
    legend.get_title().set_fontsize(6.5)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _log_time_axis(ax: Axes) -> None:
    """Log scale without minor tick labels (matplotlib crowds them on short ranges)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.25, which="both", linewidth=0.5)


def _events(ax: Axes, events: Sequence[tuple[float, str]]) -> dict[str, Line2D]:
    """Mark emergence events as vertical lines; returns one legend handle per event name."""
    handles: dict[str, Line2D] = {}
    for time, name in events:
        if time <= 0:
            continue
        colour, style, text = EVENT_STYLES.get(name, ("0.4", ":", name.replace("_", " ")))
        ax.axvline(time, color=colour, linestyle=style, linewidth=1.1, alpha=0.85)
        handles[name] = Line2D([], [], color=colour, linestyle=style, linewidth=1.1, label=text)
    return handles


def _thresholds(ax: Axes, thresholds: tuple[float, float]) -> None:
    for level, name in zip(thresholds, ("true", "partial"), strict=True):
        ax.axhline(level, color=CLASS_COLOURS[name], linewidth=0.8, linestyle=":")


def _threshold_handles(thresholds: tuple[float, float]) -> list[Line2D]:
    return [
        Line2D(
            [],
            [],
            color=CLASS_COLOURS[name],
            linewidth=0.8,
            linestyle=":",
            label=f"{name} threshold {level:g}",
        )
        for level, name in zip(thresholds, ("true", "partial"), strict=True)
    ]


def _moved_at(t: np.ndarray, y: np.ndarray) -> float:
    """First time at which ``y`` is :data:`_MOVED_FRACTION` of its range from its first value."""
    t, y = _positive(t, y)
    if t.size < 2:
        return math.inf
    span = float(np.max(y) - np.min(y))
    if span <= 0:
        return math.inf
    moved = np.nonzero(np.abs(y - y[0]) >= _MOVED_FRACTION * span)[0]
    return float(t[moved[0]]) if moved.size else math.inf


def _crop(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], marks: Sequence[float]
) -> tuple[float | None, int]:
    """Left end of the time axis that leaves out the measurements before anything moved.

    Args:
        curves: ``(t, y)`` of every curve drawn.
        marks: Times of the vertical lines drawn (events, breakpoints): never cropped away.

    Returns:
        ``(left, dropped)``: half a decade before the first change of any curve (or the first
        mark), and how many measurement times lie before it; ``(None, 0)`` if nothing would be
        left out.
    """
    first = min(
        [_moved_at(t, y) for t, y in curves] + [time for time in marks if time > 0],
        default=math.inf,
    )
    if not math.isfinite(first):
        return None, 0
    left = first / 10**_CROP_MARGIN_DECADES
    times = np.unique(np.concatenate([_positive(t, y)[0] for t, y in curves]))
    dropped = int(np.sum(times < left))
    return (left, dropped) if dropped else (None, 0)


def _step_ticks(history: History, lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Positions on the gradient-flow axis (within ``[lo, hi]``) of round optimizer steps.

    Steps 1, 2, 5 x 10^k are placed by log-log interpolation between the measured
    ``(step, lr_integral)`` pairs; ticks closer than 0.12 decades to the previous one are left
    out (the cosine decay crowds the last steps into a short stretch of gradient-flow time).
    """
    steps, times = _positive(history.floats("step"), history.floats("lr_integral"))
    positive = times > 0  # log-log interpolation: step 1 before any learning rate is out
    steps, times = steps[positive], times[positive]
    keep = np.concatenate([[True], np.diff(times) > 0])  # strictly increasing in time
    steps, times = steps[keep], times[keep]
    if steps.size < 2:
        return [], []
    positions: list[float] = []
    labels: list[str] = []
    for decade in range(int(np.floor(np.log10(steps[0]))), int(np.ceil(np.log10(steps[-1]))) + 1):
        for mantissa in (1, 2, 5):
            step = mantissa * 10**decade
            if not steps[0] <= step <= steps[-1]:
                continue
            time = float(10 ** np.interp(np.log10(step), np.log10(steps), np.log10(times)))
            if not lo <= time <= hi or (positions and np.log10(time / positions[-1]) < 0.12):
                continue
            positions.append(time)
            labels.append(f"{step:,}".replace(",", " "))
    return positions, labels


def _step_axis(ax: Axes, history: History | None) -> None:
    """An optimizer-step axis on top of a gradient-flow axis (after its limits are final)."""
    if history is None or not len(history):
        return
    lo, hi = ax.get_xlim()
    positions, labels = _step_ticks(history, lo, hi)
    if not positions:
        return
    top = ax.secondary_xaxis("top")
    top.set_xticks(positions, labels, fontsize=7)
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("optimizer step", fontsize=7)


def _series(history: History | None, column: str) -> tuple[np.ndarray, np.ndarray]:
    if history is None or not len(history) or column not in history.columns:
        return np.empty(0), np.empty(0)
    return _positive(history.t, history.floats(column))


def _frameless(ax: Axes) -> None:
    """No axes frame around a particle panel (the box is drawn; labels stay)."""
    for spine in ax.spines.values():
        spine.set_visible(False)
