"""The exponent table: power-law fits of every head's trajectories, with their reading.

Which trajectories are fitted by default (``docs/report.md`` gives the reasoning):

* ``score`` — the collision-detection score's rise, as a **growth** away from its start value,
  ``O(t) - O(t0) = C t^alpha``;
* ``query_spearman`` — the attention-distance correlation (the per-query Spearman correlation
  of attention with distance, averaged over queries; not a function of the score) approaching
  its final value, as a **decay** ``|O(t) - O_inf| = C t^-alpha``.

Any observable of :data:`lit_emergence.records.schema.OBSERVABLES` can be fitted instead, each
as its ``kind`` says; ``g_contact`` (the connected correlation at contact distance) is an affine
function of the score on a fixed probe set, so its fit is a fit of the score.

Only a decay exponent has the effective-potential reading (``a = 2 + 1/alpha``,
``rho = (1 + alpha)/(1 + 2 alpha)``), and only for a fit that decays: ``alpha > 0`` and the
fitted ``|O - O_inf|`` shrinking by at least :data:`MIN_DECAY_FACTOR` over the window (a nearly
flat fit has ``alpha`` near 0 and a meaningless degree ``2 + 1/alpha`` in the thousands).
Growth rows leave those columns empty. The fits of a head whose score never left its initial
level (no ``onset`` event) are marked (``score_moved`` false): they describe noise.

Every fit comes from :mod:`lit_emergence.dynamics`. The window is the one
:func:`~lit_emergence.dynamics.detect_window` finds; where it finds none (common on
sparse histories: it needs about five points per 0.3 decades), the fallback is stated in the
``window_source`` column: the first point that has covered half of the total change splits the
trajectory, a growth is fitted from the start up to it (the rise, before saturation bends it)
and a decay from it to the end (the approach to the asymptote, after the emergence). On that
window :func:`compare_models` ranks all four models by AICc, and the power law and broken power
law are refitted with the block bootstrap and jackknife for their reported errors.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lit_emergence.dynamics import (
    BrokenPowerLawFit,
    FitError,
    Kind,
    ModelComparison,
    PowerLawFit,
    TimeAxis,
    compare_models,
    detect_window,
    fit_model,
    with_uncertainty,
)
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import Run
from lit_emergence.records.schema import Observable

#: Delta AICc below which the power law counts as tied with the preferred model (as
#: docs/dynamics.md reads a breakpoint or logistic against a single power law).
AICC_TIE = 4.0
#: Factor by which a fitted decay must shrink ``|O - O_inf|`` over its window for the potential
#: reading (smaller: the fit is flat, its ``alpha`` near 0 and its degree meaningless).
MIN_DECAY_FACTOR = 1.5
# Points the smallest fit needs: a power law with a fitted offset has three parameters, and
# lit_emergence.dynamics asks for three points more than parameters.
MIN_FIT_POINTS = 6
# What a fit may raise: FitError (numerical failures included) or ValueError (bad arguments).
_FIT_FAILURES = (FitError, ValueError)


#: Columns of ``exponents.csv``, in order.
EXPONENT_COLUMNS: tuple[str, ...] = (
    "run",
    "layer",
    "head",
    "head_class",
    "observable",
    "kind",
    "time_axis",
    "n_points",
    "window_start",
    "window_end",
    "window_decades",
    "window_source",
    "alpha",
    "alpha_error",
    "potential_degree",
    "potential_degree_error",
    "lojasiewicz_exponent",
    "lojasiewicz_exponent_error",
    "offset",
    "preferred_model",
    "delta_aicc_power_law",
    "power_law_supported",
    "broken_alpha1",
    "broken_alpha1_error",
    "broken_alpha2",
    "broken_alpha2_error",
    "t_break",
    "t_break_error",
    "score_moved",
    "note",
)


@dataclass(frozen=True, eq=False)
class HeadFit:
    """The fits of one observable of one head, or the reasons they could not be made.

    Attributes:
        run: Run name.
        layer: Block index.
        head: Head index.
        head_class: Final class of the head.
        observable: What was fitted.
        time_axis: ``"gradient_flow"`` or ``"step"``.
        t: Every usable time (> 0, finite value), for plotting.
        y: The observable at :attr:`t`.
        window: The fitted window ``(t_a, t_b)``, if one could be chosen.
        window_source: How the window was chosen.
        comparison: All models ranked by AICc on the window.
        power_law: The power law with its bootstrap errors.
        broken: The broken power law with its bootstrap errors.
        notes: Why something could not be fitted.
        score_moved: Whether the head's collision score left its initial level (it has an
            ``onset`` event), ``None`` if unknown.
    """

    run: str
    layer: int
    head: int
    head_class: str
    observable: Observable
    time_axis: TimeAxis
    t: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    window: tuple[float, float] | None = None
    window_source: str = ""
    comparison: ModelComparison | None = field(default=None, repr=False)
    power_law: PowerLawFit | None = field(default=None, repr=False)
    broken: BrokenPowerLawFit | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()
    score_moved: bool | None = None

    @property
    def delta_aicc_power_law(self) -> float:
        """AICc of the power law minus the best model's (0 when it is preferred)."""
        if self.comparison is None:
            return math.nan
        row = next((r for r in self.comparison.rows if r.model == "power_law"), None)
        return row.delta_aicc if row is not None else math.nan

    @property
    def decay_factor(self) -> float:
        """``(t_b / t_a)^alpha``: how much the fitted power law shrinks over its window."""
        if self.power_law is None or self.window is None:
            return math.nan
        start, end = self.window
        return float((end / start) ** self.power_law.exponent)

    def record(self) -> dict[str, Any]:
        """One row of ``exponents.csv`` (NaN where a value does not exist)."""
        nan = math.nan
        pl, broken = self.power_law, self.broken
        # The potential reading holds for a decay only, and only for one that decays (a
        # fitted "decay" with alpha <= 0 moves away from its asymptote, a nearly flat one has a
        # degree 2 + 1/alpha in the thousands: there is nothing to read).
        notes = list(self.notes)
        readable = False
        if pl is not None and self.observable.kind == "decay":
            shrink = self.decay_factor
            if pl.exponent <= 0:
                notes.append("alpha <= 0: not a decay, no potential reading")
            elif shrink < MIN_DECAY_FACTOR:
                notes.append(
                    f"flat: the fit shrinks |O - O_inf| by a factor {shrink:.3g} over its window "
                    f"(< {MIN_DECAY_FACTOR:g}), no potential reading"
                )
            else:
                readable = True
        if self.score_moved is False:
            notes.append("score never moved (no onset): the fits describe noise")
        alpha = pl.exponent if pl is not None else nan
        alpha_error = pl.exponent_error if pl is not None else nan
        window = self.window or (nan, nan)
        delta = self.delta_aicc_power_law
        return {
            "run": self.run,
            "layer": self.layer,
            "head": self.head,
            "head_class": self.head_class,
            "observable": self.observable.name,
            "kind": self.observable.kind,
            "time_axis": self.time_axis,
            "n_points": pl.n if pl is not None else _points_in(self.t, self.window),
            "window_start": window[0],
            "window_end": window[1],
            "window_decades": math.log10(window[1] / window[0]) if self.window else nan,
            "window_source": self.window_source,
            "alpha": alpha,
            "alpha_error": alpha_error,
            "potential_degree": pl.potential_degree if readable else nan,
            "potential_degree_error": pl.potential_degree_se if readable else nan,
            "lojasiewicz_exponent": pl.lojasiewicz_exponent if readable else nan,
            "lojasiewicz_exponent_error": pl.lojasiewicz_exponent_se if readable else nan,
            "offset": pl.offset if pl is not None else nan,
            "preferred_model": self.comparison.preferred if self.comparison is not None else "",
            "delta_aicc_power_law": delta,
            "power_law_supported": bool(delta < AICC_TIE) if math.isfinite(delta) else "",
            "broken_alpha1": broken.exponents[0] if broken is not None else nan,
            "broken_alpha1_error": broken.exponent_errors[0] if broken is not None else nan,
            "broken_alpha2": broken.exponents[1] if broken is not None else nan,
            "broken_alpha2_error": broken.exponent_errors[1] if broken is not None else nan,
            "t_break": broken.breakpoint if broken is not None else nan,
            "t_break_error": broken.breakpoint_error if broken is not None else nan,
            "score_moved": "" if self.score_moved is None else self.score_moved,
            "note": "; ".join(notes),
        }


def _points_in(t: np.ndarray, window: tuple[float, float] | None) -> int:
    if window is None:
        return int(t.size)
    return int(np.sum((t >= window[0]) & (t <= window[1])))


def _usable(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points a log-time fit can use (t > 0, finite), sorted by time."""
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], y[keep][order]


def choose_window(t: np.ndarray, y: np.ndarray, kind: Kind) -> tuple[tuple[float, float], str]:
    """The fitting window: detected if possible, else the documented fallback.

    Args:
        t: Usable times, sorted.
        y: Observations.
        kind: ``"growth"`` or ``"decay"``.

    Returns:
        ``(window, source)``: the window and how it was chosen.

    Raises:
        Unavailable: If there are fewer points than the smallest fit needs.
    """
    if t.size < MIN_FIT_POINTS:
        raise Unavailable(
            f"{t.size} measurement(s) at t > 0 are too few to fit "
            f"(a power law with a fitted offset needs {MIN_FIT_POINTS})"
        )
    try:
        return detect_window(t, y, kind).window, "detected"
    except FitError:
        pass
    # The half-way point of the total change splits a sparse trajectory: a growth away from
    # the start value is fitted up to it (before saturation bends it), a decay towards the
    # asymptote from it on (after the emergence).
    moved = np.abs(y - y[0])
    half = int(np.argmax(moved >= 0.5 * moved.max())) if moved.max() > 0 else t.size - 1
    if kind == "growth":
        return (float(t[0]), float(t[half])), "start to half the total change (none detected)"
    return (float(t[half]), float(t[-1])), "half the total change to the end (none detected)"


def fit_trajectory(
    t: np.ndarray,
    y: np.ndarray,
    kind: Kind,
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Window, model comparison, power law and broken power law of one trajectory.

    Args:
        t: Times (any order; t <= 0 and non-finite points are dropped).
        y: Observations.
        kind: ``"growth"`` or ``"decay"``.
        n_bootstrap: Block-bootstrap replicates of the two power laws (0: Jacobian errors).
        seed: Bootstrap seed.

    Returns:
        Keyword arguments of :class:`HeadFit`: ``t``, ``y``, ``window``, ``window_source``,
        ``comparison``, ``power_law``, ``broken`` and ``notes`` (a reason per failure).
    """
    t, y = _usable(np.asarray(t, dtype=float), np.asarray(y, dtype=float))
    result: dict[str, Any] = {"t": t, "y": y, "notes": ()}
    try:
        window, source = choose_window(t, y, kind)
    except Unavailable as reason:
        result["notes"] = (str(reason),)
        return result
    result.update(window=window, window_source=source)
    inside = _points_in(t, window)
    if inside < MIN_FIT_POINTS:
        result["notes"] = (
            f"{inside} point(s) in the window {window[0]:.3g} to {window[1]:.3g} ({source}) "
            f"are too few to fit (a power law with a fitted offset needs {MIN_FIT_POINTS})",
        )
        return result
    notes: list[str] = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # Noisy trajectories push the optimiser through overflowing trial points; the fits
        # recover or fail with a FitError, and the warnings would only bury the report's own.
        warnings.simplefilter("ignore", RuntimeWarning)
        result["comparison"] = _compare(t, y, kind, window, notes)
        for key, model in (("power_law", "power_law"), ("broken", "broken_power_law")):
            try:
                fit = fit_model(model, t, y, kind, window=window)
                if n_bootstrap > 0:
                    fit = with_uncertainty(fit, n_bootstrap, seed=seed)
                result[key] = fit
            except _FIT_FAILURES as error:
                notes.append(_reason(model, error))
    result["notes"] = tuple(notes)
    return result


def _reason(model: str, error: Exception) -> str:
    text = str(error) or error.__class__.__name__
    return text if text.startswith(model) else f"{model}: {text}"


def _compare(
    t: np.ndarray, y: np.ndarray, kind: Kind, window: tuple[float, float], notes: list[str]
) -> ModelComparison | None:
    """:func:`compare_models` on the window; ``None`` (with the reason noted) if nothing fits.

    A model whose own fit fails (numerical failures included) is left out of the comparison
    by ``compare_models``; its reason is noted.
    """
    try:
        comparison = compare_models(t, y, kind, window=window)
    except FitError as error:
        notes.append(f"model comparison: {error}")
        return None
    notes.extend(
        f"left out of the comparison: {reason}"
        for reason in comparison.failed.values()
        if "numerical failure" in reason
    )
    return comparison


def fit_head(
    run: Run,
    layer: int,
    head: int,
    observable: Observable,
    *,
    head_class: str = "",
    time_axis: TimeAxis = "gradient_flow",
    n_bootstrap: int = 100,
    seed: int = 0,
    score_moved: bool | None = None,
) -> HeadFit:
    """Fit one observable of one head of a run.

    Args:
        run: The run.
        layer: Block index.
        head: Head index.
        observable: What to fit (one of :data:`lit_emergence.records.schema.OBSERVABLES`).
        head_class: The head's final class (copied into the table).
        time_axis: ``"gradient_flow"`` (``lr_integral``) or ``"step"``.
        n_bootstrap: Block-bootstrap replicates (0: Jacobian errors only).
        seed: Bootstrap seed.
        score_moved: Whether the head's score left its initial level (copied into the table).

    Returns:
        The :class:`HeadFit`; what could not be fitted is in its ``notes``.
    """
    common = {
        "run": run.name,
        "layer": layer,
        "head": head,
        "head_class": head_class,
        "observable": observable,
        "time_axis": time_axis,
        "score_moved": score_moved,
    }
    try:
        series = run.history(observable.history).for_head(layer, head)
    except Unavailable as reason:
        return HeadFit(**common, t=np.empty(0), y=np.empty(0), notes=(str(reason),))
    fitted = fit_trajectory(
        series.time(time_axis),
        series.floats(observable.column),
        observable.kind,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return HeadFit(**common, **fitted)
