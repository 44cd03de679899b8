"""The four models ``O(t) = B + s C g(t)``: ``log g``, its gradient and a start grid for each.

``docs/dynamics.md`` gives their formulas. A model is fitted by :mod:`lit_emergence.dynamics.fit`
in log space, so each spec provides ``log g(t; theta)`` and its gradient in the shape
parameters ``theta`` (some fitted as logarithms), with ``e = -1`` for a decay and ``+1`` for a
growth, and a grid of shape parameters from which the fit starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

__all__ = ["MODEL_NAMES", "SPECS", "ModelSpec"]

#: Models known to :func:`~lit_emergence.dynamics.fit_model` and
#: :func:`~lit_emergence.dynamics.compare_models`.
MODEL_NAMES: tuple[str, ...] = ("power_law", "broken_power_law", "exponential", "logistic")


@dataclass(frozen=True)
class ModelSpec:
    """A model ``log g(t; theta)``; ``e = -1`` for decay, ``+1`` for growth.

    Attributes:
        name: One of :data:`MODEL_NAMES`.
        shape: Physical names of the shape parameters.
        log_scale: Whether each shape parameter is fitted as its logarithm.
        log_g: ``log_g(theta, log t, t, e)``: ``log g`` at every time.
        grad: ``grad(theta, log t, t, e)``: its gradient in ``theta``, one column each.
        grid: ``grid(log t, t, min_points)``: candidate ``theta`` rows for the start.
    """

    name: str
    shape: tuple[str, ...]
    log_scale: tuple[bool, ...]
    log_g: Callable[[Sequence[np.ndarray], np.ndarray, np.ndarray, int], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
    grid: Callable[[np.ndarray, np.ndarray, int], np.ndarray]


# ------------------------------------------------------- power law: g = t^(e alpha)
def _pl_log_g(th: Sequence[np.ndarray], lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    return e * th[0] * lt


def _pl_grad(th: np.ndarray, lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    return (e * lt)[:, None]


def _pl_grid(lt: np.ndarray, t: np.ndarray, m: int) -> np.ndarray:
    return np.geomspace(0.01, 10.0, 40)[:, None]


# --------------------------- exponential: g = exp(-t/tau) or 1 - exp(-t/tau), log tau
def _exp_log_g(th: Sequence[np.ndarray], lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    x = t * np.exp(-th[0])
    return -x if e < 0 else np.log(-np.expm1(-x))


def _exp_grad(th: np.ndarray, lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    x = t * np.exp(-th[0])
    if e < 0:
        return x[:, None]
    with np.errstate(over="ignore"):
        return (-x / np.expm1(x))[:, None]


def _exp_grid(lt: np.ndarray, t: np.ndarray, m: int) -> np.ndarray:
    return np.log(np.geomspace(t[0] / 3.0, t[-1] * 3.0, 30))[:, None]


# ------------------ logistic in log t: g = 1 / (1 + (t_mid/t)^(e h)), log t_mid, log h
def _logistic_log_g(th: Sequence[np.ndarray], lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    a = np.exp(th[1]) * (lt - th[0])
    return -np.logaddexp(0.0, -e * a)


def _logistic_grad(th: np.ndarray, lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    h = math.exp(th[1])
    a = h * (lt - th[0])
    d = e * expit(-e * a)  # d log g / d a
    return np.stack([-h * d, a * d], axis=1)


def _logistic_grid(lt: np.ndarray, t: np.ndarray, m: int) -> np.ndarray:
    mids = np.linspace(lt[0] - 0.5, lt[-1] + 0.5, 25)
    hs = np.log(np.geomspace(0.2, 20.0, 12))
    return np.stack(np.meshgrid(mids, hs, indexing="ij"), axis=-1).reshape(-1, 2)


# ------------- broken power law: exponents alpha1 / alpha2 either side of log t_break
def _broken_log_g(th: Sequence[np.ndarray], lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    d = lt - th[2]
    return e * (th[0] * np.minimum(d, 0.0) + th[1] * np.maximum(d, 0.0))


def _broken_grad(th: np.ndarray, lt: np.ndarray, t: np.ndarray, e: int) -> np.ndarray:
    d = lt - th[2]
    before = d < 0
    return np.stack(
        [e * np.minimum(d, 0.0), e * np.maximum(d, 0.0), -e * np.where(before, th[0], th[1])],
        axis=1,
    )


def _broken_grid(lt: np.ndarray, t: np.ndarray, m: int) -> np.ndarray:
    alphas = np.geomspace(0.02, 8.0, 12)
    breaks = np.linspace(lt[m - 1], lt[lt.size - m], 12)
    grid = np.meshgrid(alphas, alphas, breaks, indexing="ij")
    return np.stack(grid, axis=-1).reshape(-1, 3)


#: The spec of every model in :data:`MODEL_NAMES`, by name.
SPECS: dict[str, ModelSpec] = {
    "power_law": ModelSpec("power_law", ("alpha",), (False,), _pl_log_g, _pl_grad, _pl_grid),
    "exponential": ModelSpec("exponential", ("tau",), (True,), _exp_log_g, _exp_grad, _exp_grid),
    "logistic": ModelSpec(
        "logistic", ("t_mid", "h"), (True, True), _logistic_log_g, _logistic_grad, _logistic_grid
    ),
    "broken_power_law": ModelSpec(
        "broken_power_law",
        ("alpha1", "alpha2", "t_break"),
        (False, False, True),
        _broken_log_g,
        _broken_grad,
        _broken_grid,
    ),
}
