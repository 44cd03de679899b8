"""Time axes of a history: optimizer steps or gradient-flow time (the cumulative learning rate).

``TimeAxis`` is defined in :mod:`lit_emergence.records.schema` and re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lit_emergence.records.schema import TimeAxis

__all__ = ["TimeAxis", "gradient_flow_time", "gradient_flow_time_from_samples", "time_axis"]


def gradient_flow_time(
    lr: Sequence[float] | np.ndarray, steps: np.ndarray | None = None
) -> np.ndarray:
    """Gradient-flow time from the learning rate of every optimizer step.

    Update ``i`` (0-based) with step size ``lr[i]`` advances gradient-flow time by ``lr[i]``
    (an Euler step of ``dtheta/dt = -grad V``), so after ``n`` updates the time is
    ``t_n = lr[0] + ... + lr[n-1]``. This is what the emergence callbacks record as
    ``lr_integral`` next to ``step`` (the number of updates done).

    Args:
        lr: Learning rate of each optimizer step, in order (length N).
        steps: Optional step counts (numbers of updates done, ``0 <= steps <= N``) at which to
            read the time, e.g. the ``step`` column of a history.

    Returns:
        ``t`` of length N + 1 with ``t[n]`` the time after ``n`` updates (``t[0] = 0``), or
        ``t[steps]`` if ``steps`` is given.

    Raises:
        ValueError: If ``lr`` is not a finite, non-negative 1-D series or a step is out of range.
    """
    lr = np.asarray(lr, dtype=float)
    if lr.ndim != 1 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise ValueError("lr must be a 1-D series of finite, non-negative learning rates")
    tau = np.concatenate([[0.0], np.cumsum(lr)])
    if steps is None:
        return tau
    steps = np.asarray(steps)
    if steps.size and (
        np.any(steps != np.round(steps)) or steps.min() < 0 or steps.max() > lr.size
    ):
        raise ValueError(f"steps must be integers in [0, {lr.size}] (the number of updates done)")
    return tau[steps.astype(int)]


def gradient_flow_time_from_samples(
    steps: Sequence[float] | np.ndarray, lr: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Approximate gradient-flow time from learning rates sampled only at some steps.

    The integral of the learning rate over steps is taken with the trapezoid rule between
    samples and as ``steps[0] * lr[0]`` before the first one. Exact for a piecewise-linear
    schedule sampled at its kinks; otherwise an approximation whose error is set by the
    sampling density. Prefer the exact ``lr_integral`` column the callbacks record, or
    :func:`gradient_flow_time` with every step's rate.

    Args:
        steps: Increasing step counts at which the rate was read.
        lr: Learning rate at those steps.

    Returns:
        Gradient-flow time at each of ``steps``.

    Raises:
        ValueError: On mismatched lengths, unsorted steps or negative rates.
    """
    steps = np.asarray(steps, dtype=float)
    lr = np.asarray(lr, dtype=float)
    if steps.shape != lr.shape or steps.ndim != 1 or steps.size == 0:
        raise ValueError("steps and lr must be 1-D arrays of the same, non-zero length")
    if np.any(np.diff(steps) < 0) or np.any(lr < 0) or steps[0] < 0:
        raise ValueError("steps must be non-negative and increasing, lr non-negative")
    increments = 0.5 * (lr[1:] + lr[:-1]) * np.diff(steps)
    return steps[0] * lr[0] + np.concatenate([[0.0], np.cumsum(increments)])


def time_axis(
    steps: Sequence[float] | np.ndarray,
    time: TimeAxis = "step",
    *,
    cumulative_lr: Sequence[float] | np.ndarray | None = None,
    lr_per_step: Sequence[float] | np.ndarray | None = None,
    lr_at_steps: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """The time coordinate of history rows: optimizer steps or gradient-flow time.

    The fits take any positive ``t``; this helper only makes the choice explicit. Use
    ``"gradient_flow"`` to compare with the theory, which is stated for gradient flow: on the
    step axis a linear warm-up makes ``t_gf ~ step^2`` and a decay freezes ``t_gf`` while the
    steps keep counting, so schedules masquerade as power laws (``docs/dynamics.md``).

    Args:
        steps: The ``step`` column (number of optimizer updates done).
        time: ``"step"`` or ``"gradient_flow"``.
        cumulative_lr: The recorded cumulative learning rate of each row (the ``lr_integral``
            column); used as is.
        lr_per_step: The learning rate of every optimizer step (see
            :func:`gradient_flow_time`).
        lr_at_steps: The learning rate sampled at ``steps`` (approximate, see
            :func:`gradient_flow_time_from_samples`).

    Returns:
        The time of each row as floats.

    Raises:
        ValueError: On an unknown axis, or for ``"gradient_flow"`` unless exactly one source of
            learning rates is given.
    """
    steps = np.asarray(steps, dtype=float)
    if time == "step":
        return steps.copy()
    if time != "gradient_flow":
        raise ValueError(f"time must be 'step' or 'gradient_flow', got {time!r}")
    sources = [s is not None for s in (cumulative_lr, lr_per_step, lr_at_steps)]
    if sum(sources) != 1:
        raise ValueError(
            "time='gradient_flow' needs exactly one of cumulative_lr (the lr_integral column), "
            "lr_per_step or lr_at_steps"
        )
    if cumulative_lr is not None:
        tau = np.asarray(cumulative_lr, dtype=float)
        if tau.shape != steps.shape:
            raise ValueError("cumulative_lr must have one value per step")
        return tau.copy()
    if lr_per_step is not None:
        return gradient_flow_time(lr_per_step, steps)
    return gradient_flow_time_from_samples(steps, lr_at_steps)  # type: ignore[arg-type]
