"""Power-law analysis of training dynamics: fits, fitting windows, alternatives, uncertainty.

``docs/dynamics.md`` describes the models and how the fits work. One concept per module:

* :mod:`~lit_emergence.dynamics.time` — the time axis (steps or gradient-flow time);
* :mod:`~lit_emergence.dynamics.theory` — an exponent's reading (potential degree,
  Łojasiewicz exponent);
* :mod:`~lit_emergence.dynamics.trajectory` — the input ``(t, y)``, its kind, :class:`FitError`;
* :mod:`~lit_emergence.dynamics.models` — the four models;
* :mod:`~lit_emergence.dynamics.results` — the fit results;
* :mod:`~lit_emergence.dynamics.windows` — the power-law window search;
* :mod:`~lit_emergence.dynamics.fit` — the least-squares fit engine and :func:`fit_model`;
* :mod:`~lit_emergence.dynamics.resampling` — block bootstrap and jackknife, and
  :func:`with_uncertainty` (a finished fit with those errors attached);
* :mod:`~lit_emergence.dynamics.comparison` — models ranked by AICc.
"""

from lit_emergence.dynamics.comparison import ComparisonRow, ModelComparison, compare_models
from lit_emergence.dynamics.fit import fit_model
from lit_emergence.dynamics.models import MODEL_NAMES
from lit_emergence.dynamics.resampling import block_bootstrap, block_jackknife, with_uncertainty
from lit_emergence.dynamics.results import (
    BootstrapResult,
    BrokenPowerLawFit,
    JackknifeResult,
    ModelFit,
    PowerLawFit,
)
from lit_emergence.dynamics.theory import lojasiewicz_exponent, potential_degree
from lit_emergence.dynamics.time import (
    TimeAxis,
    gradient_flow_time,
    gradient_flow_time_from_samples,
    time_axis,
)
from lit_emergence.dynamics.trajectory import FitError, Kind
from lit_emergence.dynamics.windows import WindowDetection, detect_window

__all__ = [
    "MODEL_NAMES",
    "BootstrapResult",
    "BrokenPowerLawFit",
    "ComparisonRow",
    "FitError",
    "JackknifeResult",
    "Kind",
    "ModelComparison",
    "ModelFit",
    "PowerLawFit",
    "TimeAxis",
    "WindowDetection",
    "block_bootstrap",
    "block_jackknife",
    "compare_models",
    "detect_window",
    "fit_model",
    "gradient_flow_time",
    "gradient_flow_time_from_samples",
    "lojasiewicz_exponent",
    "potential_degree",
    "time_axis",
    "with_uncertainty",
]
