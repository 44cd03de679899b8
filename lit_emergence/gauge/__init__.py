"""Gauge symmetries of attention heads: transformations, invariants, canonical gauge, matching.

A head's weights are defined only up to ``W_Q -> W_Q A``, ``W_K -> W_K A^{-T}``,
``W_V -> W_V B``, ``W_O -> B^{-1} W_O`` (A, B in GL(Dh), biases alike) and up to the order of
the heads in a block (Hashimoto, Hirono and Sannai, arXiv:2402.02362). One concept per module:

* :mod:`~lit_emergence.gauge.heads`: reading and writing per-head weights (maths convention);
* :mod:`~lit_emergence.gauge.transforms`: :func:`random_gauge`, :func:`apply_gauge`;
* :mod:`~lit_emergence.gauge.invariants`: :func:`head_invariants` (spectra, norms, effective
  ranks of ``W_QK`` and ``W_OV``), :func:`feature_space_qk`;
* :mod:`~lit_emergence.gauge.canonical`: :func:`canonical_gauge` (balanced SVD),
  :func:`gauge_imbalance`;
* :mod:`~lit_emergence.gauge.matching`: :func:`match_heads`, :func:`match_models`,
  :func:`match_checkpoints` (Hungarian assignment on invariant features);
* :mod:`~lit_emergence.gauge.llc`: :func:`estimate_llc_canonical`.

The package exports the model-level verbs and their results; the per-block building blocks
(``heads.HeadWeights``, ``heads.read_heads``/``write_heads``, ``invariants.qk_circuit``,
``canonical.balanced_factors``, ``transforms.random_invertible``, ...) stay importable from
their modules. See ``docs/gauge.md``.
"""

from lit_emergence.gauge.canonical import canonical_gauge, gauge_imbalance
from lit_emergence.gauge.heads import attention_modules
from lit_emergence.gauge.invariants import (
    SCALAR_OBSERVABLES,
    HeadInvariants,
    feature_space_qk,
    head_invariants,
)
from lit_emergence.gauge.llc import estimate_llc_canonical, estimate_llc_many_canonical
from lit_emergence.gauge.matching import (
    HeadMatching,
    head_features,
    match_checkpoints,
    match_heads,
    match_models,
)
from lit_emergence.gauge.transforms import (
    GaugeTransform,
    apply_gauge,
    identity_gauge,
    random_gauge,
)

__all__ = [
    "SCALAR_OBSERVABLES",
    "GaugeTransform",
    "HeadInvariants",
    "HeadMatching",
    "apply_gauge",
    "attention_modules",
    "canonical_gauge",
    "estimate_llc_canonical",
    "estimate_llc_many_canonical",
    "feature_space_qk",
    "gauge_imbalance",
    "head_features",
    "head_invariants",
    "identity_gauge",
    "match_checkpoints",
    "match_heads",
    "match_models",
    "random_gauge",
]
