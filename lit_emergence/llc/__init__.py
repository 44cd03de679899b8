"""Local learning coefficient (LLC) estimation with SGLD chains vectorised over ``torch.func``.

``estimate_llc`` estimates the LLC of a model (or of a restriction of it, e.g. one attention
head); ``estimate_llc_many`` runs many restrictions (whole model and every head) with all their
chains in one vmap. Results are :class:`LLCResult` objects with the loss traces and
diagnostics (diverged chains, traces still climbing).
"""

from lit_emergence.llc.estimator import (
    default_inputs,
    default_n_beta,
    estimate_llc,
    estimate_llc_many,
)
from lit_emergence.llc.noise import RestrictedNoise
from lit_emergence.llc.restriction import (
    Restriction,
    attention_head_restriction,
    attention_head_restrictions,
    resolve_restriction,
)
from lit_emergence.llc.result import LLCResult
from lit_emergence.llc.sampler import SAMPLERS, LangevinKernel

__all__ = [
    "SAMPLERS",
    "LLCResult",
    "LangevinKernel",
    "RestrictedNoise",
    "Restriction",
    "attention_head_restriction",
    "attention_head_restrictions",
    "default_inputs",
    "default_n_beta",
    "estimate_llc",
    "estimate_llc_many",
    "resolve_restriction",
]
