"""Model comparison: several models fitted on the same points, ranked by AICc."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lit_emergence.dynamics.fit import Window, fit_model, infer_sign, select_window
from lit_emergence.dynamics.models import MODEL_NAMES
from lit_emergence.dynamics.results import ModelFit
from lit_emergence.dynamics.trajectory import FitError, Kind, check_kind

__all__ = ["ComparisonRow", "ModelComparison", "compare_models"]


@dataclass(frozen=True)
class ComparisonRow:
    """One model in a :class:`ModelComparison`.

    Attributes:
        model: Model name.
        k: Free parameters including the noise variance.
        n: Points fitted.
        aicc: AICc (lower is better).
        delta_aicc: AICc minus the best AICc.
        weight: Akaike weight ``exp(-delta/2) / sum``.
        preferred: Whether this model has the lowest AICc.
    """

    model: str
    k: int
    n: int
    aicc: float
    delta_aicc: float
    weight: float
    preferred: bool


@dataclass(frozen=True, eq=False)
class ModelComparison:
    """Models fitted on the same window, ranked by AICc.

    Attributes:
        rows: One row per successfully fitted model, best first.
        fits: The fits by model name.
        failed: Models that could not be fitted, with the reason.
        window: The common window.
        kind: ``"decay"`` or ``"growth"``.
    """

    rows: tuple[ComparisonRow, ...]
    fits: dict[str, ModelFit] = field(repr=False)
    failed: dict[str, str]
    window: tuple[float, float]
    kind: Kind

    @property
    def preferred(self) -> str:
        """Name of the model with the lowest AICc."""
        return self.rows[0].model

    def as_records(self) -> list[dict[str, object]]:
        """Rows as dictionaries (for CSV / Markdown tables)."""
        return [dataclasses.asdict(row) for row in self.rows]


def compare_models(
    t: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    kind: Kind = "decay",
    *,
    window: Window = None,
    offset: float | None = None,
    sign: int | None = None,
    models: Sequence[str] = MODEL_NAMES,
    min_points_per_regime: int = 4,
) -> ModelComparison:
    """Fit several models on the same points and rank them by AICc.

    All models share the window, the offset's meaning and side (``sign``), and the noise
    model (log-normal around the curve); the AICc is the likelihood of the data in the units
    of O (it includes the Jacobian ``-sum log|O_i - B|`` of the log transform), so the values
    are comparable across models with different offsets. ``delta_aicc < 2`` is usually read
    as "not distinguishable", ``> 10`` as decisive.

    Args:
        t: Times (> 0).
        y: Observations.
        kind: ``"decay"`` or ``"growth"``.
        window: ``(t_a, t_b)``, ``"auto"`` (detected once, used for all) or ``None``.
        offset: Fixed offset for every model, or ``None`` to fit it per model.
        sign: Side of the offset the data lie on (inferred once by default).
        models: Which of :data:`MODEL_NAMES` to fit.
        min_points_per_regime: Broken power law: points on each side of the break.

    Returns:
        The :class:`ModelComparison`.

    Raises:
        FitError: If no model could be fitted.
    """
    check_kind(kind)
    ts, ys, win = select_window(t, y, window, kind)
    s = sign if sign is not None else infer_sign(ts, ys, kind, offset)
    fits: dict[str, ModelFit] = {}
    failed: dict[str, str] = {}
    for name in models:
        try:
            fits[name] = fit_model(
                name,
                ts,
                ys,
                kind,
                offset=offset,
                sign=s,
                min_points_per_regime=min_points_per_regime,
            )
        except FitError as exc:
            failed[name] = str(exc)
    if not fits:
        raise FitError("no model could be fitted: " + "; ".join(failed.values()))
    ranked = sorted(fits.values(), key=lambda f: f.aicc)
    best = ranked[0].aicc
    deltas = np.array([f.aicc - best for f in ranked])
    weights = np.exp(-0.5 * np.where(np.isfinite(deltas), deltas, np.inf))
    weights = weights / weights.sum()
    rows = tuple(
        ComparisonRow(
            model=f.model,
            k=f.k,
            n=f.n,
            aicc=f.aicc,
            delta_aicc=float(d),
            weight=float(w),
            preferred=i == 0,
        )
        for i, (f, d, w) in enumerate(zip(ranked, deltas, weights, strict=True))
    )
    return ModelComparison(rows=rows, fits=fits, failed=failed, window=win, kind=kind)
