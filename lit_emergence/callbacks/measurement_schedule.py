"""When a measurement callback runs: log-spaced optimizer steps, step 0 included.

Emergence is read on log-log axes, so measurements are spaced evenly in ``log(step)``:
``points_per_decade`` distinct integer steps per factor of ten (fewer at the very start, where
rounding merges neighbours). Step 0 — the untrained model — is always included. Optionally,
``every`` adds a linear grid on top (e.g. every 1000 steps late in training).
"""

from __future__ import annotations

import math


class LogSchedule:
    """Log-spaced evaluation steps: ``0`` and ``round(10 ** (k / points_per_decade))``, k >= 0.

    Args:
        points_per_decade: Grid points per factor of ten in steps (> 0).
        every: If given, also every multiple of ``every`` (> 0).
        max_step: If given, no step above it is scheduled.
        start: Log-grid points below ``start`` are skipped (step 0 is always kept); e.g.
            ``LogSchedule(points_per_decade=1, start=100)`` is 0, 100, 1000, 10000, ...

    Example:
        >>> LogSchedule(points_per_decade=4).steps_up_to(100)
        [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    """

    def __init__(
        self,
        points_per_decade: float = 6.0,
        every: int | None = None,
        max_step: int | None = None,
        start: int = 1,
    ) -> None:
        if not points_per_decade > 0:
            raise ValueError(f"points_per_decade must be > 0, got {points_per_decade}")
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of steps or null, got {every}")
        self.points_per_decade = float(points_per_decade)
        self.every = every
        self.max_step = max_step
        self.start = start

    def _grid_point(self, k: int) -> int:
        return round(10.0 ** (k / self.points_per_decade))

    def __call__(self, step: int) -> bool:
        """Return True if ``step`` is scheduled."""
        if step < 0 or (self.max_step is not None and step > self.max_step):
            return False
        if step == 0 or (self.every is not None and step % self.every == 0):
            return True
        if step < self.start:
            return False
        # The grid point nearest in log space, and its neighbours (rounding can map two
        # exponents to one integer, or put the matching exponent one off).
        k = round(math.log10(step) * self.points_per_decade)
        return any(self._grid_point(j) == step for j in (k - 1, k, k + 1) if j >= 0)

    def steps_up_to(self, last_step: int) -> list[int]:
        """All scheduled steps in ``[0, last_step]``, ascending."""
        steps = {0} if last_step >= 0 else set()
        k = 0
        while (point := self._grid_point(k)) <= last_step:
            if point >= self.start:
                steps.add(point)
            k += 1
        if self.every is not None:
            steps.update(range(0, last_step + 1, self.every))
        if self.max_step is not None:
            steps = {s for s in steps if s <= self.max_step}
        return sorted(steps)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(points_per_decade={self.points_per_decade:g}, "
            f"every={self.every}, max_step={self.max_step}, start={self.start})"
        )
