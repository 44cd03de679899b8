"""The fit engine: one model fitted to a trajectory by nonlinear least squares in log space.

Selects the points (:func:`select_window`), sets up the least-squares problem of a model
(``_Problem``: residuals, analytic Jacobian, bounds, a grid start) and solves it
(:func:`fit_model`, :func:`refit`). :func:`~lit_emergence.dynamics.resampling.with_uncertainty`
adds the resampled errors to a finished fit; ``docs/dynamics.md`` describes the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

import numpy as np
from scipy.optimize import least_squares

from lit_emergence.dynamics.models import MODEL_NAMES, SPECS, ModelSpec
from lit_emergence.dynamics.results import RESULT_TYPES, ModelFit
from lit_emergence.dynamics.trajectory import FitError, Kind, check_kind, clean
from lit_emergence.dynamics.windows import WindowDetection, detect_window

__all__ = ["Window", "fit_model", "infer_sign", "refit", "select_window"]

#: The points to fit: ``(t_a, t_b)``, a detected window, ``"auto"`` or ``None`` (all).
Window: TypeAlias = "tuple[float, float] | WindowDetection | Literal['auto'] | None"

_LN10 = math.log(10.0)


# ------------------------------------------------------------------------------- data prep
def select_window(
    t: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    window: Window,
    kind: Kind | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The clean points of a trajectory inside a window.

    Args:
        t: Times (points with ``t <= 0`` and non-finite values are dropped).
        y: Observations.
        window: ``(t_a, t_b)`` (inclusive), a :class:`WindowDetection`, ``"auto"``
            (:func:`detect_window` with this ``kind``) or ``None`` for all points.
        kind: Passed to :func:`detect_window` for ``"auto"``.

    Returns:
        ``(t, y, (t_first, t_last))`` of the selected points, sorted by time.

    Raises:
        FitError: On ``t_a >= t_b`` or an empty selection.
        ValueError: On a string other than ``"auto"``.
    """
    t, y = clean(t, y)
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(f"window must be (t_a, t_b), 'auto' or None, got {window!r}")
        window = detect_window(t, y, kind).window
    elif isinstance(window, WindowDetection):
        window = window.window
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not lo < hi:
            raise FitError(f"window must satisfy t_a < t_b, got {window}")
        inside = (t >= lo) & (t <= hi)
        t, y = t[inside], y[inside]
    if t.size == 0:
        raise FitError(f"no finite points with t > 0 in the window {window}")
    return t, y, (float(t[0]), float(t[-1]))


def infer_sign(t: np.ndarray, y: np.ndarray, kind: Kind, offset: float | None) -> int:
    """Which side of the offset the data lie on, when the caller did not say.

    Args:
        t: Times of the selected points.
        y: Observations.
        kind: ``"decay"`` or ``"growth"``.
        offset: A fixed offset, or ``None`` when it is fitted.

    Returns:
        The side of the data's median if the offset is fixed; otherwise the trend's sign in
        ``log t`` for a growth and its opposite for a decay (a decreasing decay lies above its
        asymptote).

    Raises:
        FitError: If the median equals the fixed offset.
    """
    if offset is not None:
        side = np.sign(np.median(y) - offset)
        if side == 0:
            raise FitError("the data's median equals the fixed offset; pass sign explicitly")
        return int(side)
    trend = np.polyfit(np.log(t), y, 1)[0] if t.size > 1 else 0.0
    trend_sign = 1 if trend >= 0 else -1
    return trend_sign if kind == "growth" else -trend_sign


# -------------------------------------------------------------------------- the fit itself
def _aicc(z: np.ndarray, rss: float, n: int, k: int) -> float:
    """AICc of log-normal noise around the model, with the Jacobian to the units of O."""
    sigma2 = max(rss / n, 1e-300)
    log_lik = -0.5 * n * (math.log(2.0 * math.pi * sigma2) + 1.0) - float(np.sum(z))
    if n - k - 1 <= 0:
        return math.inf
    return -2.0 * log_lik + 2.0 * k + 2.0 * k * (k + 1) / (n - k - 1)


class _Problem:
    """Log-space least squares for one model on one data set (internal)."""

    def __init__(
        self,
        spec: ModelSpec,
        t: np.ndarray,
        y: np.ndarray,
        e: int,
        sign: int,
        offset: float | None,
        min_points: int,
    ) -> None:
        self.spec, self.t, self.lt, self.e, self.sign = spec, t, np.log(t), e, sign
        self.w = sign * y
        self.min_points = min_points
        self.free_offset = offset is None
        n_par = len(spec.shape) + 1 + int(self.free_offset)
        if t.size < n_par + 3:
            raise FitError(
                f"{spec.name}: {t.size} points are too few to fit {n_par} parameters "
                f"(need at least {n_par + 3})"
            )
        if self.free_offset:
            self.edge = float(self.w.min())
            spread = float(np.ptp(self.w))
            if spread == 0.0:
                raise FitError(f"{spec.name}: the trajectory is constant on the window")
            self.scale = spread
            self.z_ref = math.log(spread)
        else:
            self.b = sign * float(offset)  # type: ignore[arg-type]
            diff = self.w - self.b
            if np.any(diff <= 0):
                raise FitError(
                    f"{spec.name}: the fixed offset {offset} does not lie strictly on one side "
                    "of the data (every point must satisfy sign * (y - offset) > 0)"
                )
            self.z_fixed = np.log(diff)
        self.lower, self.upper = self._bounds()

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = [-np.inf] * (len(self.spec.shape) + 1)
        hi = [np.inf] * (len(self.spec.shape) + 1)
        if self.spec.name == "broken_power_law":
            m, n = self.min_points, self.lt.size
            if self.lt[m - 1] >= self.lt[n - m]:
                raise FitError(
                    f"broken_power_law: need {m} points at distinct times on each side of the "
                    f"breakpoint, got {n} points"
                )
            lo[-1], hi[-1] = self.lt[m - 1], self.lt[n - m]
        # Times (tau, t_mid) within 5 decades of the data, the logistic's steepness within
        # [0.01, 1000]: beyond those the curves are indistinguishable from their limits, and
        # unbounded logarithms let the optimiser step into overflow.
        span = 5.0 * _LN10
        for i, name in enumerate(self.spec.shape, start=1):
            if name in ("tau", "t_mid"):
                lo[i], hi[i] = self.lt[0] - span, self.lt[-1] + span
            elif name == "h":
                lo[i], hi[i] = math.log(0.01), math.log(1000.0)
        if self.free_offset:
            lo.insert(0, math.log(self.scale * 1e-10))
            hi.insert(0, math.log(self.scale * 1e6))
        return np.array(lo), np.array(hi)

    def z(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.free_offset:
            return self.z_fixed, None
        d = np.exp(x[0])
        diff = self.w - self.edge + d
        return np.log(diff), d / diff

    def theta(self, x: np.ndarray) -> np.ndarray:
        return x[1:] if self.free_offset else x

    def log_residuals(self, x: np.ndarray) -> np.ndarray:
        """``log|y - B| - log(C g(t))``."""
        z, _ = self.z(x)
        th = self.theta(x)
        return z - th[0] - self.spec.log_g(tuple(th[1:]), self.lt, self.t, self.e)

    def _gmean(self, z: np.ndarray) -> float:
        """Geometric mean of ``|y - B|`` relative to the data's scale (1 if B is fixed)."""
        return math.exp(float(np.mean(z)) - self.z_ref) if self.free_offset else 1.0

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Log residuals scaled by the geometric mean of ``|y - B|``.

        With a fitted offset the factor (the Box-Cox normalisation) keeps the offset from
        drifting away from the data, where every log residual shrinks; it makes the least
        squares the maximum-likelihood fit of log-normal noise. With a fixed offset it is 1.
        """
        z, _ = self.z(x)
        return self.log_residuals(x) * self._gmean(z)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        z, dz = self.z(x)
        th = self.theta(x)
        cols = [-np.ones((self.t.size, 1)), -self.spec.grad(th[1:], self.lt, self.t, self.e)]
        if dz is None:
            return np.hstack(cols)
        g = self._gmean(z)
        r = self.log_residuals(x)
        cols.insert(0, (dz + r * float(np.mean(dz)))[:, None])
        return g * np.hstack(cols)

    def initial_guess(self) -> list[np.ndarray]:
        """Best grid points (offset x shape, log C profiled out), one per distinct offset."""
        grid = self.spec.grid(self.lt, self.t, self.min_points)
        lo, hi = self.lower[-grid.shape[1] :], self.upper[-grid.shape[1] :]
        grid = np.clip(grid, lo, hi)
        log_g = self.spec.log_g(tuple(grid.T[:, :, None]), self.lt, self.t, self.e)
        us = np.log(self.scale * np.geomspace(1e-7, 1e3, 21)) if self.free_offset else [None]
        scored = []
        for u in us:
            z = self.z(np.array([u]))[0] if u is not None else self.z_fixed
            r = z[None, :] - log_g
            c = r.mean(axis=1)
            rss = np.sum((r - c[:, None]) ** 2, axis=1) * self._gmean(z) ** 2
            rss[~np.isfinite(rss)] = np.inf
            j = int(np.argmin(rss))
            start = np.concatenate([[c[j]], grid[j]])
            if u is not None:
                start = np.concatenate([[u], start])
            scored.append((float(rss[j]), start))
        scored.sort(key=lambda item: item[0])
        return [start for rss, start in scored[:3] if np.isfinite(rss)] or [scored[0][1]]

    def solve(self, starts: list[np.ndarray]) -> np.ndarray:
        best = None
        for x0 in starts:
            x0 = np.clip(x0, self.lower + 1e-9, self.upper - 1e-9)
            x0 = np.where(np.isfinite(x0), x0, 0.0)
            res = least_squares(
                self.residuals,
                x0,
                jac=self.jacobian,
                bounds=(self.lower, self.upper),
                method="trf",
                x_scale="jac",
                max_nfev=400,
            )
            if np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
                best = res
        if best is None:
            raise FitError(f"{self.spec.name}: the least-squares fit did not converge")
        return best.x

    def result(self, x: np.ndarray, kind: Kind) -> ModelFit:
        r = self.log_residuals(x)
        z, _ = self.z(x)
        n, p = self.t.size, x.size
        rss = float(r @ r)
        scaled = self.residuals(x)
        J = self.jacobian(x)
        with np.errstate(all="ignore"):
            cov = np.linalg.pinv(J.T @ J) * (float(scaled @ scaled) / max(n - p, 1))
        se_int = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        theta, se_theta = self.theta(x), self.theta(se_int)
        params = {"C": math.exp(theta[0])}
        stderr = {"C": params["C"] * float(se_theta[0])}
        for name, is_log, v, s in zip(
            self.spec.shape, self.spec.log_scale, theta[1:], se_theta[1:], strict=True
        ):
            params[name] = math.exp(v) if is_log else float(v)
            stderr[name] = params[name] * float(s) if is_log else float(s)
        if self.free_offset:
            d = math.exp(x[0])
            offset, offset_se = self.sign * (self.edge - d), d * float(se_int[0])
        else:
            offset, offset_se = self.sign * self.b, math.nan
        cls = RESULT_TYPES.get(self.spec.name, ModelFit)
        return cls(
            model=self.spec.name,
            kind=kind,
            sign=self.sign,
            params=params,
            stderr=stderr,
            offset=float(offset),
            offset_se=float(offset_se),
            offset_fitted=self.free_offset,
            window=(float(self.t[0]), float(self.t[-1])),
            t=self.t,
            y=self.sign * self.w,
            residuals=r,
            rss=rss,
            n=n,
            k=p + 1,
            aicc=_aicc(z, rss, n, p + 1),
            _theta=np.array(theta, dtype=float),
        )


def fit_model(
    model: str,
    t: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    kind: Kind = "decay",
    *,
    window: Window = None,
    offset: float | None = None,
    sign: int | None = None,
    min_points_per_regime: int = 4,
) -> ModelFit:
    """Fit one of :data:`MODEL_NAMES` by least squares in log space.

    The errors stored on the result are the Jacobian ones;
    :func:`~lit_emergence.dynamics.resampling.with_uncertainty` adds the block bootstrap and
    the block jackknife of the finished fit (:attr:`ModelFit.bootstrap`,
    :attr:`ModelFit.jackknife`).

    Args:
        model: ``"power_law"``, ``"broken_power_law"``, ``"exponential"`` or ``"logistic"``.
        t: Times (> 0; other points and non-finite values are dropped), on either axis
            (:func:`time_axis`).
        y: Observations.
        kind: ``"decay"`` towards an asymptote or ``"growth"`` away from a start value.
        window: ``(t_a, t_b)`` (inclusive), a :class:`WindowDetection`, ``"auto"``
            (:func:`detect_window` with its defaults and this ``kind``), or ``None`` for all
            points.
        offset: Fix the offset (``O_inf`` or the start value) instead of fitting it.
        sign: +1 if the data lie above the offset, -1 below; inferred by default from the
            trend (a decreasing decay lies above its asymptote) or from a fixed offset.
        min_points_per_regime: Broken power law only: points required on each side of the
            breakpoint.

    Returns:
        The fit (:class:`PowerLawFit` / :class:`BrokenPowerLawFit` for the power laws).

    Raises:
        FitError: Too few points, an empty window, constant data, or an offset inside the data.
        ValueError: Unknown model or kind.
    """
    if model not in SPECS:
        raise ValueError(f"unknown model {model!r}; choose from {MODEL_NAMES}")
    e = check_kind(kind)
    ts, ys, _ = select_window(t, y, window, kind)
    s = sign if sign is not None else infer_sign(ts, ys, kind, offset)
    if s not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    problem = _Problem(SPECS[model], ts, ys, e, s, offset, min_points_per_regime)
    try:
        return problem.result(problem.solve(problem.initial_guess()), kind)
    except (ArithmeticError, np.linalg.LinAlgError) as error:
        # Reported like any other failed fit, so compare_models leaves out only this model.
        raise FitError(f"{model}: numerical failure ({type(error).__name__}: {error})") from error


def refit(fit: ModelFit, t: np.ndarray, y: np.ndarray, min_points: int) -> ModelFit:
    """Fit ``fit``'s model to new data, starting from ``fit``'s solution.

    The replicates of :mod:`lit_emergence.dynamics.resampling` are refitted this way: same
    model, kind, side and (fixed or fitted) offset, one start.

    Args:
        fit: A finished fit.
        t: Times of the new data (sorted, > 0).
        y: Observations.
        min_points: Broken power law: points required on each side of the breakpoint.

    Returns:
        The fit of the new data.

    Raises:
        FitError: If the new data cannot be fitted.
    """
    e = -1 if fit.kind == "decay" else 1
    offset = None if fit.offset_fitted else fit.offset
    problem = _Problem(SPECS[fit.model], t, y, e, fit.sign, offset, min_points)
    x0 = fit._theta.copy()
    if fit.offset_fitted:
        gap = problem.edge - fit.sign * fit.offset
        x0 = np.concatenate([[math.log(max(gap, problem.scale * 1e-9))], x0])
    return problem.result(problem.solve([x0]), fit.kind)
