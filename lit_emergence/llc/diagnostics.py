r"""Whether an LLC estimate can be trusted: MALA acceptance, localisation check, verdict.

Every :class:`~lit_emergence.llc.LLCResult` carries four diagnostics and a verdict built from
them with :func:`verdict` and the thresholds of :class:`VerdictThresholds`:

* **Divergence** (``num_diverged``): chains whose loss became non-finite or exploded; and
  ``exceeds_regular_bound``: the estimate is above ``max_regular_ratio`` times ``d / 2``
  (``d`` the sampled coordinates) by more than two standard errors. No minimum has an LLC
  above ``d / 2`` (a regular one has exactly that), and a stable step inflates it by
  ``1 / (1 - eps a / 4)`` at most a few tens of per cent: such a value means the chains left
  the basin of ``w*`` (e.g. an unstable stiff direction let them settle on a plateau of
  higher loss, where the loss is flat and even the MALA acceptance looks fine).
* **Trace flatness** (``trace_rise``, ``still_climbing``): rise of the chain-averaged loss
  over the second half of the draws, in units of the chains' spread there.
* **MALA acceptance** (``acceptance``, Furman & Lau 2024): SGLD never rejects a step, but
  each step is a Langevin proposal whose Metropolis-Hastings acceptance probability under
  the localised tempered posterior ``p(w) ~ exp(-U(w))``,
  ``U(w) = n_beta L_b(w) + gamma/2 |w - w*|^2``, measures its discretisation error. For the
  step ``w -> w'`` made with noise ``xi`` on minibatch ``b`` (the chain's own minibatch loss,
  both ends on the same ``b``), with ``F = grad U`` on the sampled coordinates and ``s`` the
  noise scale of the step (``sqrt(eps)``; ``sqrt(eps G)`` for RMSProp-SGLD, whose
  preconditioner ``G`` is taken as fixed over the step)::

      log alpha = U(w) - U(w') + xi . d - |d|^2 / 2,   d = (s / 2) (F(w) + F(w'))
      alpha     = min(1, exp(log alpha))

  (the ratio ``p(w') q(w | w') / (p(w) q(w' | w))`` of the Gaussian proposal densities,
  with ``w' - w = -(s^2 / 2) F(w) + s xi``). Near 1: the steps resolve the posterior; far
  below 1: the step size is too large for its stiffest directions and the estimate is biased
  (high, until the chains diverge).
* **Localisation check** (``llc_weak_localization``, ``localization_shift``): the same
  chains' budget run again at ``gamma / localization_check`` (default ``gamma / 4``) with the
  same noise. ``localization_shift = (lambda(gamma/4) - lambda(gamma)) / lambda(gamma/4)``:
  for a quadratic direction of curvature ``h`` the bias of ``lambda(gamma)`` against
  ``gamma = 0`` is ``gamma / (n_beta h + gamma)``, 4/3 of its shift, so a shift of 10 %
  means the localisation removes about 13 % of the value.

Verdicts, in this order of precedence (thresholds in :class:`VerdictThresholds`):

``diverged``
    a chain diverged, or the estimate exceeds the regular bound; lower ``step_size`` (or raise
    ``localization``).
``not-at-minimum``
    the estimate is below zero by more than two standard errors: the chains found lower loss
    than at ``w*``, so ``w*`` is not a local minimum of the sampled loss (mid-training, before
    the loss has settled, or an ``n_beta`` so large that the remaining gradient outweighs the
    noise); an LLC is defined at a minimum only, so the number is not one. Measure later in
    training, or lower ``n_beta``.
``not-converged``
    the trace still climbs (``trace_rise > climb_threshold``) or the MALA acceptance is below
    ``min_acceptance`` (steps too large to sample the posterior); run longer, or lower
    ``step_size`` when the acceptance is low.
``localisation-dominated``
    ``localization_shift > max_localization_shift`` and the shift is larger than
    ``significance`` standard errors of the paired chain differences: the localisation, not
    the loss, sets the value; lower ``localization`` or raise ``n_beta``.
``ok``
    none of the above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_THRESHOLDS",
    "VERDICTS",
    "VerdictThresholds",
    "below_zero",
    "exceeds_regular_bound",
    "localization_shift",
    "mala_log_acceptance",
    "verdict",
]

VERDICTS = ("ok", "localisation-dominated", "not-converged", "not-at-minimum", "diverged")
"""Every value of ``LLCResult.verdict`` (and of ``llc.csv``'s ``verdict`` column)."""


@dataclass(frozen=True)
class VerdictThresholds:
    """Where the diagnostics turn a verdict (documented in this module's docstring).

    Attributes:
        min_acceptance: Lowest mean MALA acceptance of an ``ok`` estimate. The known-answer
            cases run at 0.92-1.0 with the default step size. On the 28-parameter regular
            model (minibatches of 512 of n = 2048) 4 times the default step inflates the
            estimate by 16 % at acceptance 0.92, 6 times by 25 % at 0.875 and 8 times by
            36 % at 0.84: the acceptance catches step-size errors of about 20 % and more.
        max_localization_shift: Largest relative rise of the estimate from ``gamma`` to
            ``gamma / localization_check`` of an ``ok`` estimate.
        significance: The rise must also exceed this many standard errors of the paired
            per-chain differences (with one chain, the relative rise alone decides).
        max_regular_ratio: An estimate above this times ``d / 2`` (two standard errors
            clear) has left the basin: ``diverged``. The regular model passes it at 20 times
            the default step (2.5 times d/2, acceptance 0.70).
    """

    min_acceptance: float = 0.9
    max_localization_shift: float = 0.1
    significance: float = 2.0
    max_regular_ratio: float = 1.5


DEFAULT_THRESHOLDS = VerdictThresholds()
"""The thresholds used unless an estimate is given others."""


def mala_log_acceptance(
    energy_old: Tensor,
    energy_new: Tensor,
    force_old: Tensor,
    force_new: Tensor,
    noise: Tensor,
    noise_scale: Tensor,
) -> Tensor:
    """Log Metropolis-Hastings ratio of Langevin proposals ``w -> w'`` (see the module doc).

    Args:
        energy_old: ``U(w)`` (..., ) in float64.
        energy_new: ``U(w')`` (..., ).
        force_old: ``grad U(w)`` on the sampled coordinates (..., P), zero elsewhere.
        force_new: ``grad U(w')`` (..., P).
        noise: The standard normal draw of the step (..., P), zero outside the sampled ones.
        noise_scale: ``s``, broadcastable to (..., P): ``sqrt(eps)`` or ``sqrt(eps G)``.

    Returns:
        ``log alpha`` (..., ) in float64 (may be positive; the acceptance is
        ``exp(min(0, log alpha))``).

    """
    d = (noise_scale / 2) * (force_old + force_new)
    cross = (noise * d).sum(dim=-1, dtype=torch.float64)
    square = (d * d).sum(dim=-1, dtype=torch.float64)
    return energy_old - energy_new + cross - square / 2


def localization_shift(llc_per_chain: Tensor, weak_per_chain: Tensor) -> tuple[float, float]:
    """Relative rise of the estimate when the localisation is weakened, and its z-score.

    Args:
        llc_per_chain: Per-chain estimates at ``gamma`` (K,), NaN for diverged chains.
        weak_per_chain: The same chains (same noise) at the weaker localisation (K,).

    Returns:
        ``(shift, z)``: ``(mean(weak) - mean(llc)) / mean(weak)`` over the chains finite in
        both (NaN when the weaker estimate is not positive or no pair is finite), and the
        mean paired difference over its standard error (``inf`` with one pair or no spread).

    """
    finite = llc_per_chain.isfinite() & weak_per_chain.isfinite()
    if not bool(finite.any()):
        return math.nan, math.nan
    strong, weak = llc_per_chain[finite], weak_per_chain[finite]
    weak_mean = float(weak.mean())
    difference = weak - strong
    rise = float(difference.mean())
    shift = rise / weak_mean if weak_mean > 0 else math.nan
    pairs = difference.numel()
    spread = float(difference.std()) if pairs > 1 else 0.0
    if spread == 0.0:
        z = math.copysign(math.inf, rise) if rise != 0 else 0.0
    else:
        z = rise / (spread / math.sqrt(pairs))
    return shift, z


def exceeds_regular_bound(
    llc_mean: float,
    llc_sem: float,
    num_sampled: int,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> bool:
    """Whether the estimate is above ``max_regular_ratio * d / 2`` by two standard errors.

    Args:
        llc_mean: The estimate.
        llc_sem: Its standard error (NaN with one chain: the estimate alone decides).
        num_sampled: ``d``, the coordinates sampled.
        thresholds: The thresholds.

    Returns:
        True when the chains have left the basin of ``w*``.

    """
    margin = 2 * llc_sem if math.isfinite(llc_sem) else 0.0
    return llc_mean - margin > thresholds.max_regular_ratio * num_sampled / 2


def below_zero(llc_mean: float, llc_sem: float) -> bool:
    """Whether the estimate is below zero by more than two standard errors.

    Args:
        llc_mean: The estimate.
        llc_sem: Its standard error (NaN with one chain: the estimate alone decides).

    Returns:
        True when ``w*`` is not a local minimum of the sampled loss.

    """
    margin = 2 * llc_sem if math.isfinite(llc_sem) else 0.0
    return llc_mean + margin < 0


def verdict(
    *,
    num_diverged: int,
    still_climbing: bool,
    acceptance: float,
    localization_shift: float,
    shift_z: float,
    exceeds_regular: bool = False,
    negative: bool = False,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> str:
    """The verdict of an estimate from its diagnostics (precedence in the module docstring).

    NaN diagnostics (no measurement) never turn a verdict.

    Args:
        num_diverged: Diverged chains.
        still_climbing: Whether the trace still climbs.
        acceptance: Mean MALA acceptance (NaN if not measured).
        localization_shift: See :func:`localization_shift` (NaN if not measured).
        shift_z: Its z-score.
        exceeds_regular: See :func:`exceeds_regular_bound`.
        negative: See :func:`below_zero`.
        thresholds: The thresholds.

    Returns:
        One of :data:`VERDICTS`.

    """
    if num_diverged > 0 or exceeds_regular:
        return "diverged"
    if negative:
        return "not-at-minimum"
    if still_climbing or acceptance < thresholds.min_acceptance:
        return "not-converged"
    if localization_shift > thresholds.max_localization_shift and shift_z > thresholds.significance:
        return "localisation-dominated"
    return "ok"
