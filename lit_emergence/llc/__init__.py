"""Local learning coefficient (LLC) estimation with SGLD chains vectorised over ``torch.func``.

``estimate_llc`` estimates the LLC of a model (or of a restriction of it, e.g. one attention
head); ``estimate_llc_many`` runs many restrictions (whole model and every head) with all their
chains in one vmap. Results are :class:`LLCResult` objects with the loss traces and
diagnostics (diverged chains, traces still climbing).

The sampler's building blocks (``sampler.LangevinKernel``, ``noise.RestrictedNoise``,
``restriction.resolve_restriction``, ``estimator.default_inputs``) stay importable from their
modules.
"""

from lit_emergence.llc.estimator import default_n_beta, estimate_llc, estimate_llc_many
from lit_emergence.llc.restriction import (
    Restriction,
    attention_head_restriction,
    attention_head_restrictions,
)
from lit_emergence.llc.result import LLCResult
from lit_emergence.llc.sampler import SAMPLERS

__all__ = [
    "SAMPLERS",
    "LLCResult",
    "Restriction",
    "attention_head_restriction",
    "attention_head_restrictions",
    "default_n_beta",
    "estimate_llc",
    "estimate_llc_many",
]
