"""Power-law window search: the longest stretch of t over which the local exponent is stable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lit_emergence.dynamics.trajectory import FitError, Kind, check_kind, clean

__all__ = ["WindowDetection", "detect_window"]

_LN10 = math.log(10.0)


@dataclass(frozen=True, eq=False)
class WindowDetection:
    """A detected power-law window (see :func:`detect_window`).

    Attributes:
        window: ``(t_a, t_b)``, both data times, inclusive.
        exponent: Median local exponent ``p`` in the window (``-alpha`` for a decay,
            ``+alpha`` for a growth).
        n: Points in the window.
        decades: ``log10(t_b / t_a)``.
        t: All usable times (sorted, > 0).
        local_exponent: Local exponent at each of :attr:`t` (NaN where the derivative is not
            significantly non-zero).
    """

    window: tuple[float, float]
    exponent: float
    n: int
    decades: float
    t: np.ndarray = field(repr=False)
    local_exponent: np.ndarray = field(repr=False)


def _local_derivative(
    x: np.ndarray, y: np.ndarray, half_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """dy/dx at each (sorted) x_i from a quadratic fit within ``|x_j - x_i| <= half_width``.

    The quadratic absorbs the curvature, so the standard error (from its residuals) measures
    noise, not shape; the derivative at the centre stays unbiased near the ends of the data,
    where the window is one-sided.
    """
    n = x.size
    lo = np.searchsorted(x, x - half_width, side="left")
    hi = np.searchsorted(x, x + half_width, side="right")
    slope, se = np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        m = hi[i] - lo[i]
        if m < 5:
            continue
        u = x[lo[i] : hi[i]] - x[i]
        X = np.stack([np.ones(m), u, u * u], axis=1)
        gram = X.T @ X
        if np.linalg.cond(gram) > 1e12:
            continue
        inv = np.linalg.inv(gram)
        beta = inv @ (X.T @ y[lo[i] : hi[i]])
        r = y[lo[i] : hi[i]] - X @ beta
        slope[i] = beta[1]
        se[i] = math.sqrt(float(r @ r) / (m - 3) * inv[1, 1])
    return slope, se


def detect_window(
    t: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    kind: Kind | None = None,
    *,
    span_decades: float = 0.3,
    rel_tol: float = 0.05,
    abs_tol: float = 0.0,
    min_decades: float = 1.0,
    min_points: int = 8,
    snr: float = 3.0,
) -> WindowDetection:
    """Find the longest stretch of t over which O(t) follows one power law.

    1. The derivative ``D = dO/d log t`` at each point is that of a quadratic in ``log t``
       fitted by least squares over ``span_decades`` centred on it (its standard error,
       from the quadratic's residuals, measures noise rather than curvature). Points where
       ``|D|`` is not above ``snr`` standard errors (flat stretches, noise-dominated plateaus)
       are unusable.
    2. The local exponent ``p = d log|D| / d log t`` is obtained the same way from
       ``log|D|`` among usable points. For ``O = B + s C t^p`` it equals ``p`` whatever the
       offset ``B``, so no fit is needed. Its standard error ``se(p)`` is the larger of the
       regression's and ``sqrt(6) se(D) / (|D| span)`` (the derivative's noise, counting two
       independent derivatives per span, since neighbouring ones share points).
    3. For every candidate value ``p*`` (each local exponent; a quantile grid of 256 on long
       series) the longest run of consecutive usable points with the same sign of ``D`` and
       ``|p - p*| <= rel_tol |p*| + abs_tol + snr se(p)`` is found (noisy curves get a
       proportionally wider band). The window is the longest such run in decades (ties: more
       points) with at least ``min_points`` points and ``min_decades`` decades.

    The smoothing span trades noise for resolution: a regime shorter than about two spans is
    not found, and the window edges are uncertain by about half a span.

    Args:
        t: Times (> 0; others and non-finite values are dropped).
        y: Observations.
        kind: ``"decay"`` keeps only decreasing ``|O - B|`` (local exponent < 0), ``"growth"``
            only increasing (> 0), ``None`` either. Without it a decay fit can land on the
            trivial early regime ``O(t) - O(0) ~ t`` (local exponent +1) of any smooth curve;
            with ``"growth"`` that regime is a legitimate answer (exponent 1) when it is the
            longest.
        span_decades: Width of the local regressions, in decades.
        rel_tol: Relative tolerance on the local exponent.
        abs_tol: Absolute tolerance on the local exponent.
        min_decades: Minimum length of the window, in decades.
        min_points: Minimum number of points in the window.
        snr: Derivative significance threshold (in standard errors).

    Returns:
        The :class:`WindowDetection`.

    Raises:
        FitError: If no stretch meets ``min_points`` and ``min_decades``.
    """
    t, y = clean(t, y)
    n = t.size
    if n < max(min_points, 5):
        raise FitError(f"{n} usable points (t > 0, finite) are too few to detect a window")
    x = np.log(t)
    half = 0.5 * span_decades * _LN10
    D, D_se = _local_derivative(x, y, half)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(D) & (np.abs(D) > snr * np.nan_to_num(D_se, nan=np.inf)) & (D != 0)
    q, q_se = np.full(n, np.nan), np.full(n, np.nan)
    idx = np.flatnonzero(usable)
    if idx.size >= 5:
        q[idx], q_se[idx] = _local_derivative(x[idx], np.log(np.abs(D[idx])), half)
        # Neighbouring derivatives share points, so the regression's own error misses most of
        # the noise: propagate se(D)/|D| with two independent derivatives per span.
        propagated = math.sqrt(6.0) * D_se[idx] / np.abs(D[idx]) / (2.0 * half)
        q_se[idx] = np.fmax(q_se[idx], propagated)
    good = np.isfinite(q) & np.isfinite(q_se)
    if kind is not None:
        good &= q < 0 if check_kind(kind) < 0 else q > 0
    sgn = np.sign(np.nan_to_num(D))
    cand = np.flatnonzero(good)
    if cand.size > 256:
        cand = cand[np.argsort(q[cand])][np.linspace(0, cand.size - 1, 256).astype(int)]
    best: tuple[float, int, int, int] | None = None  # (span, npts, start, end)
    longest = (0.0, 0)
    need = min_decades * _LN10 * (1.0 - 1e-9)
    for i in cand:
        tol = rel_tol * abs(q[i]) + abs_tol + snr * q_se
        ok = good & (sgn == sgn[i]) & (np.abs(q - q[i]) <= tol)
        edges = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        for a, b in zip(starts, ends, strict=True):
            span, npts = float(x[b] - x[a]), int(b - a + 1)
            if (span, npts) > longest:
                longest = (span, npts)
            if npts >= min_points and span >= need and (best is None or (span, npts) > best[:2]):
                best = (span, npts, int(a), int(b))
    if best is None:
        raise FitError(
            "no power-law window: the longest stretch with a stable local exponent spans "
            f"{longest[0] / _LN10:.2f} decades with {longest[1]} points (need >= "
            f"{min_decades} decades and >= {min_points} points)"
        )
    _, npts, a, b = best
    return WindowDetection(
        window=(float(t[a]), float(t[b])),
        exponent=float(np.median(q[a : b + 1])),
        n=npts,
        decades=float((x[b] - x[a]) / _LN10),
        t=t,
        local_exponent=q,
    )
