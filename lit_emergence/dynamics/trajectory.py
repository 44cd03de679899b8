"""The input of every fit and window search: a trajectory ``(t, y)`` and its kind.

Holds what the fit engine and the window search share: the ``Kind`` of a trajectory, the
:class:`FitError` it raises when it cannot be fitted, and the cleaning of ``(t, y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["FitError", "Kind", "check_kind", "clean"]

#: ``"decay"`` towards an asymptote or ``"growth"`` away from a start value.
Kind = Literal["decay", "growth"]


class FitError(ValueError):
    """A trajectory that cannot be fitted: too few points, an empty window, constant data."""


def check_kind(kind: str) -> int:
    """The sign ``e`` of a kind's exponent: -1 for ``"decay"``, +1 for ``"growth"``.

    Args:
        kind: ``"decay"`` or ``"growth"``.

    Returns:
        -1 or +1.

    Raises:
        ValueError: On any other kind.
    """
    if kind not in ("decay", "growth"):
        raise ValueError(f"kind must be 'decay' or 'growth', got {kind!r}")
    return -1 if kind == "decay" else 1


def clean(
    t: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with ``t > 0``, sorted by time.

    Args:
        t: Times.
        y: Observations, one per time.

    Returns:
        The kept ``(t, y)`` as flat float arrays, sorted by ``t`` (stable).

    Raises:
        FitError: If ``t`` and ``y`` differ in length.
    """
    t = np.asarray(t, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if t.shape != y.shape:
        raise FitError(f"t and y differ in length ({t.size} vs {y.size})")
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], y[keep][order]
