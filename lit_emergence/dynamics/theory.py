"""Reading a decay exponent: the effective potential's degree and the Łojasiewicz exponent."""

from __future__ import annotations

import numpy as np

__all__ = ["lojasiewicz_exponent", "potential_degree"]


def potential_degree(alpha: float | np.ndarray) -> float | np.ndarray:
    """Degree ``a`` of the effective potential ``V ~ |x|^a`` implied by a decay exponent.

    Near the limit write ``x = O - O_inf`` and ``V = |x|^a``. Gradient flow
    ``dx/dt = -a |x|^(a-1) sign(x)`` integrates to ``|x|^(2-a) = |x_0|^(2-a) + a (a-2) t``, so
    ``|x| ~ t^(-1/(a-2))`` for ``a > 2``: a decay exponent ``alpha = 1/(a-2)``, i.e.
    ``a = 2 + 1/alpha``. ``V = x^4`` gives ``alpha = 1/2``, ``V = x^6`` gives ``alpha = 1/4``;
    ``alpha -> infinity`` is the quadratic (exponential) limit. The reading is for convergence
    (decay) exponents; applied to a growth exponent it is only the formal mapping.

    Args:
        alpha: Decay exponent(s) ``alpha > 0``.

    Returns:
        ``2 + 1/alpha``.
    """
    a = np.asarray(alpha, dtype=float)
    with np.errstate(divide="ignore"):
        degree = 2.0 + 1.0 / a
    return float(degree) if degree.ndim == 0 else degree


def lojasiewicz_exponent(alpha: float | np.ndarray) -> float | np.ndarray:
    """Lojasiewicz exponent ``rho`` implied by a decay exponent.

    With ``V = |x|^a``, ``|grad V| = a |x|^(a-1) = a |V|^((a-1)/a)``: the Lojasiewicz inequality
    ``|grad V| >= c |V - V*|^rho`` holds with ``rho = 1 - 1/a``. Substituting
    ``a = 2 + 1/alpha`` (:func:`potential_degree`) gives ``rho = (1 + alpha) / (1 + 2 alpha)``,
    in ``(1/2, 1)`` for ``alpha > 0``; consistently, the convergence rate the Lojasiewicz
    inequality gives for gradient flow, ``|theta - theta_inf| ~ t^(-(1 - rho)/(2 rho - 1))``,
    returns ``alpha``. ``V = x^4``: ``rho = 3/4``; ``V = x^6``: ``rho = 5/6``. Smaller alpha:
    rho nearer 1, more degenerate.

    Args:
        alpha: Decay exponent(s) ``alpha > 0``.

    Returns:
        ``(1 + alpha) / (1 + 2 alpha)``.
    """
    a = np.asarray(alpha, dtype=float)
    rho = (1.0 + a) / (1.0 + 2.0 * a)
    return float(rho) if rho.ndim == 0 else rho
