"""What a fit returns: the fitted model with its errors, and its resampled errors.

:class:`BootstrapResult` and :class:`JackknifeResult` are defined here, next to the
:class:`ModelFit` that stores them, and computed by :mod:`lit_emergence.dynamics.resampling`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lit_emergence.dynamics.models import SPECS
from lit_emergence.dynamics.theory import lojasiewicz_exponent, potential_degree
from lit_emergence.dynamics.trajectory import Kind

__all__ = [
    "RESULT_TYPES",
    "BootstrapResult",
    "BrokenPowerLawFit",
    "JackknifeResult",
    "ModelFit",
    "PowerLawFit",
]

_LN10 = math.log(10.0)


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Moving-block bootstrap of a fit (see :func:`~lit_emergence.dynamics.block_bootstrap`).

    Attributes:
        n_boot: Successful refits.
        n_failed: Refits that raised or did not converge (left out).
        block_length: Block length in points.
        level: Confidence level of :attr:`ci`.
        samples: Bootstrap replicates of every parameter (and ``"offset"`` if it was fitted).
        se: Standard deviation of the replicates.
        ci: Percentile interval at :attr:`level`.
    """

    n_boot: int
    n_failed: int
    block_length: int
    level: float
    samples: dict[str, np.ndarray]
    se: dict[str, float]
    ci: dict[str, tuple[float, float]]


@dataclass(frozen=True, eq=False)
class JackknifeResult:
    """Delete-a-block jackknife of a fit (see :func:`~lit_emergence.dynamics.block_jackknife`).

    Attributes:
        n_blocks: Blocks whose deletion could be refitted.
        n_failed: Blocks whose refit failed (left out).
        block_length: Nominal block length in points.
        se: Jackknife standard error of every parameter (and ``"offset"`` if fitted).
    """

    n_blocks: int
    n_failed: int
    block_length: int
    se: dict[str, float]


@dataclass(frozen=True, eq=False)
class ModelFit:
    """A fitted model ``O(t) = offset + sign * C * g(t)`` on a window of a trajectory.

    Attributes:
        model: One of :data:`~lit_emergence.dynamics.MODEL_NAMES`.
        kind: ``"decay"`` (offset = asymptote ``O_inf``) or ``"growth"`` (offset = start value).
        sign: +1 if the data lie above the offset, -1 if below.
        params: Physical parameters: ``C`` and the model's shape parameters (``alpha``;
            ``alpha1, alpha2, t_break``; ``tau``; ``t_mid, h``).
        stderr: Asymptotic (Jacobian) standard errors of ``params``, delta method for the
            parameters fitted on a log scale; they assume independent residuals.
        offset: ``O_inf`` (decay) or the start value (growth).
        offset_se: Its standard error (NaN when the offset was fixed).
        offset_fitted: Whether the offset was fitted.
        window: ``(t_first, t_last)`` of the fitted points.
        t: Times of the fitted points (sorted).
        y: Observations at :attr:`t`.
        residuals: Log-space residuals ``log|y - offset| - log(C g(t))``.
        rss: Sum of squared log-space residuals.
        n: Number of fitted points.
        k: Free parameters including the noise variance (what AICc counts).
        aicc: Small-sample corrected AIC of the log-normal noise model, in the units of O.
        bootstrap: Block-bootstrap result, if computed.
        jackknife: Block-jackknife result, if computed.
    """

    model: str
    kind: Kind
    sign: int
    params: dict[str, float]
    stderr: dict[str, float]
    offset: float
    offset_se: float
    offset_fitted: bool
    window: tuple[float, float]
    t: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    rss: float
    n: int
    k: int
    aicc: float
    bootstrap: BootstrapResult | None = field(default=None, repr=False)
    jackknife: JackknifeResult | None = field(default=None, repr=False)
    _theta: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def predict(self, t: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Evaluate the fitted curve at times ``t > 0``.

        Args:
            t: Time(s), on the axis the fit used.

        Returns:
            ``offset + sign * C * g(t)``.
        """
        t = np.atleast_1d(np.asarray(t, dtype=float))
        spec = SPECS[self.model]
        e = -1 if self.kind == "decay" else 1
        log_g = spec.log_g(tuple(self._theta[1:]), np.log(t), t, e)
        return self.offset + self.sign * np.exp(self._theta[0] + log_g)

    def error(self, name: str) -> float:
        """Reported error of a parameter.

        The larger of the block-bootstrap and block-jackknife SEs stored on the fit, where
        computed (the bootstrap alone is too small under strongly correlated residuals, see
        :func:`~lit_emergence.dynamics.block_jackknife`), else the asymptotic SE.

        Args:
            name: A key of :attr:`params` (or ``"offset"``).

        Returns:
            The standard error.
        """
        resampled = [
            r.se[name]
            for r in (self.bootstrap, self.jackknife)
            if r is not None and name in r.se and np.isfinite(r.se[name])
        ]
        if resampled:
            return max(resampled)
        return self.offset_se if name == "offset" else self.stderr[name]


@dataclass(frozen=True, eq=False)
class PowerLawFit(ModelFit):
    """A single power law ``|O - offset| = C t^(-/+alpha)`` (see :class:`ModelFit`)."""

    @property
    def exponent(self) -> float:
        """``alpha`` (positive for a decay towards / a growth away from the offset)."""
        return self.params["alpha"]

    @property
    def exponent_se(self) -> float:
        """Asymptotic (Jacobian) standard error of ``alpha``."""
        return self.stderr["alpha"]

    @property
    def exponent_error(self) -> float:
        """Reported error of ``alpha`` (see :meth:`ModelFit.error`)."""
        return self.error("alpha")

    @property
    def amplitude(self) -> float:
        """``C``."""
        return self.params["C"]

    @property
    def potential_degree(self) -> float:
        """Effective potential degree ``2 + 1/alpha`` (:func:`potential_degree`)."""
        return float(potential_degree(self.exponent))

    @property
    def potential_degree_se(self) -> float:
        """Delta-method error of :attr:`potential_degree` from :attr:`exponent_error`."""
        return self.exponent_error / self.exponent**2 if self.exponent else math.inf

    @property
    def lojasiewicz_exponent(self) -> float:
        """Lojasiewicz exponent ``(1 + alpha)/(1 + 2 alpha)`` (:func:`lojasiewicz_exponent`)."""
        return float(lojasiewicz_exponent(self.exponent))

    @property
    def lojasiewicz_exponent_se(self) -> float:
        """Delta-method error of :attr:`lojasiewicz_exponent` from :attr:`exponent_error`."""
        return self.exponent_error / (1.0 + 2.0 * self.exponent) ** 2


@dataclass(frozen=True, eq=False)
class BrokenPowerLawFit(ModelFit):
    """Two power laws joined continuously in log-log space at ``t_break``.

    ``log|O - offset| = log C + e alpha1 log(t/t_break)`` before ``t_break`` and
    ``log C + e alpha2 log(t/t_break)`` after (``e = -1`` decay, ``+1`` growth), so ``C`` is
    the distance from the offset at the break. The Jacobian error of ``t_break`` is
    approximate (the model is piecewise); the resampled errors are better.
    """

    @property
    def exponents(self) -> tuple[float, float]:
        """``(alpha1, alpha2)``: before and after the breakpoint."""
        return self.params["alpha1"], self.params["alpha2"]

    @property
    def exponent_errors(self) -> tuple[float, float]:
        """Reported errors of the two exponents (see :meth:`ModelFit.error`)."""
        return self.error("alpha1"), self.error("alpha2")

    @property
    def breakpoint(self) -> float:
        """``t_break``."""
        return self.params["t_break"]

    @property
    def breakpoint_error(self) -> float:
        """Reported error of ``t_break`` (see :meth:`ModelFit.error`)."""
        return self.error("t_break")

    @property
    def breakpoint_log10_error(self) -> float:
        """Asymptotic error of ``log10 t_break``, in decades."""
        return self.stderr["t_break"] / (self.breakpoint * _LN10)


#: The result class of each model (the others return a plain :class:`ModelFit`).
RESULT_TYPES: dict[str, type[ModelFit]] = {
    "power_law": PowerLawFit,
    "broken_power_law": BrokenPowerLawFit,
}
