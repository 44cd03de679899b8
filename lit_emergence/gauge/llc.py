"""LLC estimates in the canonical gauge.

The learning coefficient itself is a property of the function near ``w*`` and does not change
under a linear reparametrisation (volumes scale by a constant). Its SGLD *estimate* does: the
localisation ``gamma/2 |w - w*|^2``, the isotropic noise and the step size all live in the
coordinates of the weights, and a gauge transformation with condition number ``k`` stretches
those coordinates by up to ``k`` relative to the loss. Estimating every point in the canonical
gauge (:func:`~lit_emergence.gauge.canonical_gauge`) removes that arbitrariness: gauge-equivalent
weights give the same estimate (same seed: equal up to round-off). ``docs/gauge.md`` has the
measured size of the effect on trained heads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from lit_emergence.gauge.canonical import canonical_gauge
from lit_emergence.llc import LLCResult, Restriction, estimate_llc, estimate_llc_many

__all__ = ["estimate_llc_canonical", "estimate_llc_many_canonical"]


def estimate_llc_canonical(
    model: nn.Module,
    loss_fn: Any,
    batches: Iterable[Any],
    *,
    restrict: Restriction = None,
    **kwargs: Any,
) -> LLCResult:
    """:func:`~lit_emergence.llc.estimate_llc` at the canonical-gauge copy of ``model``.

    Args:
        model: The model at ``w*`` (left untouched; a canonical copy is sampled).
        loss_fn: ``loss_fn(outputs, batch) -> scalar`` mean minibatch loss.
        batches: Fixed minibatches.
        restrict: Coordinates to sample, e.g.
            ``attention_head_restriction(model, layer, head)`` (masks by parameter name fit
            the copy as well).
        **kwargs: Keyword arguments of :func:`~lit_emergence.llc.estimate_llc_many`.

    Returns:
        The :class:`~lit_emergence.llc.LLCResult`.

    """
    return estimate_llc(canonical_gauge(model), loss_fn, batches, restrict=restrict, **kwargs)


def estimate_llc_many_canonical(
    model: nn.Module,
    loss_fn: Any,
    batches: Iterable[Any],
    restrictions: Mapping[str, Restriction],
    **kwargs: Any,
) -> dict[str, LLCResult]:
    """:func:`~lit_emergence.llc.estimate_llc_many` at the canonical-gauge copy of ``model``.

    Args:
        model: The model at ``w*`` (left untouched).
        loss_fn: ``loss_fn(outputs, batch) -> scalar`` mean minibatch loss.
        batches: Fixed minibatches.
        restrictions: Name -> restriction, e.g. ``attention_head_restrictions(model)``.
        **kwargs: Keyword arguments of :func:`~lit_emergence.llc.estimate_llc_many`.

    Returns:
        Name -> :class:`~lit_emergence.llc.LLCResult`.

    """
    return estimate_llc_many(canonical_gauge(model), loss_fn, batches, restrictions, **kwargs)
