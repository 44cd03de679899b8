"""Local learning coefficient (LLC) estimation with SGLD chains vectorised over ``torch.func``.

``estimate_llc`` estimates the LLC of a model (or of a restriction of it, e.g. one attention
head); ``estimate_llc_many`` runs many restrictions (whole model and every head) with all their
chains in one vmap. Results are :class:`LLCResult` objects with the loss traces, diagnostics
(divergence, trace flatness, MALA acceptance, localisation check) and a verdict
(``ok`` / ``localisation-dominated`` / ``not-converged`` / ``diverged``).

Defaults and their rules live in :mod:`lit_emergence.llc.settings`, the diagnostics and
verdict thresholds in :mod:`lit_emergence.llc.diagnostics`. The sampler's building blocks
(``sampler.LangevinKernel``, ``noise.RestrictedNoise``, ``restriction.resolve_restriction``,
``prefix.PrefixCache``, ``estimator.default_inputs``) stay importable from their modules.

On a finished run, ``lit-emergence llc`` (:mod:`lit_emergence.llc.offline`) estimates the LLC
at every scheduled checkpoint and ``lit-emergence llc calibrate``
(:mod:`lit_emergence.llc.calibrate`) sweeps step size and localisation; both run
``LLCMonitor``'s code and are imported only by the command line.
"""

from lit_emergence.llc.diagnostics import VERDICTS, VerdictThresholds
from lit_emergence.llc.estimator import estimate_llc, estimate_llc_many
from lit_emergence.llc.restriction import (
    Restriction,
    attention_head_restriction,
    attention_head_restrictions,
)
from lit_emergence.llc.result import LLCResult
from lit_emergence.llc.sampler import SAMPLERS
from lit_emergence.llc.settings import (
    DEFAULT_LOCALIZATION,
    DEFAULT_STEP_SCALE,
    calibration_grid,
    default_n_beta,
    n_beta_from_samples,
)

__all__ = [
    "DEFAULT_LOCALIZATION",
    "DEFAULT_STEP_SCALE",
    "SAMPLERS",
    "VERDICTS",
    "LLCResult",
    "Restriction",
    "VerdictThresholds",
    "attention_head_restriction",
    "attention_head_restrictions",
    "calibration_grid",
    "default_n_beta",
    "estimate_llc",
    "estimate_llc_many",
    "n_beta_from_samples",
]
