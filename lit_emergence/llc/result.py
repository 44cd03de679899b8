"""LLCResult: the estimate of one restriction, its chains' loss traces and diagnostics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lit_emergence.llc.diagnostics import (
    DEFAULT_THRESHOLDS,
    VerdictThresholds,
    below_zero,
    exceeds_regular_bound,
    localization_shift,
    verdict,
)

__all__ = ["LLCResult", "attach_localization_check", "summarize_chains"]


@dataclass(frozen=True)
class LLCResult:
    """Local learning coefficient estimate of one restriction (all tensors on the CPU).

    ``lambda_hat`` of chain ``c`` is ``n_beta * mean_t [L_{b(t)}(w_t) - L_{b(t)}(w*)]`` over
    its kept draws ``t``, where ``b(t)`` is the minibatch used at step ``t``: each draw is
    compared with ``w*`` on the same minibatch. ``init_loss`` is the mean of
    ``L_{b(t)}(w*)`` over the kept draws (the mean loss of ``w*`` over the batches, counted as
    often as the draws used them; exactly the mean over the batches when the number of kept
    draws is a multiple of the number of batches).

    Attributes:
        llc_per_chain: ``lambda_hat`` of every chain (K,), float64; NaN for diverged chains.
        llc_mean: Mean over the finite (non-diverged) chains; NaN if there are none.
        llc_std: Standard deviation (Bessel-corrected) over the finite chains; NaN if fewer
            than two.
        init_loss: ``L(w*)`` as paired with the draws (see above).
        loss_trace: Minibatch loss ``L_{b(t)}(w_t)`` of every chain at every step (K, S),
            burn-in included; ``w_0 = w*``.
        is_draw: Bool (S,): the steps kept as draws (after burn-in, every ``thinning``-th).
        init_losses: ``L_b(w*)`` for every minibatch b (num_batches,).
        diverged: Bool (K,): chains with a non-finite loss, or a loss that rose more than
            ``divergence_factor * (|L(w*)| + 1/n_beta)`` above ``L(w*)``.
        trace_rise: Rise of the chain-averaged loss over the second half of the draws (least-
            squares slope times its length) in units of the chains' spread about their own
            trend lines there; large positive values mean the chains are still climbing.
        still_climbing: ``trace_rise > climb_threshold``.
        num_sampled: Number of coordinates each chain samples.
        hyperparameters: Everything needed to reproduce the run (sampler, step size, ...).
        acceptance_trace: MALA acceptance probability of each step (K, S), NaN where not
            measured (:mod:`lit_emergence.llc.diagnostics`).
        acceptance: Mean acceptance over the measured steps of the finite chains (NaN if none).
        llc_weak_localization: ``llc_mean`` of the same chains' budget, same noise, at
            ``localization / localization_check`` (NaN without the check).
        weak_localization_per_chain: Its per-chain values (K,) (NaN without the check).
        localization_shift: ``(llc_weak_localization - llc_mean) / llc_weak_localization``
            over the chains finite in both (NaN without the check or when not positive).
        localization_shift_z: The mean paired difference over its standard error.
        exceeds_regular_bound: ``llc_mean`` is above 1.5 times ``num_sampled / 2`` by two
            standard errors: the chains left the basin of ``w*``.
        verdict: ``"ok"``, ``"localisation-dominated"``, ``"not-converged"`` or
            ``"diverged"`` (:func:`lit_emergence.llc.diagnostics.verdict`).

    """

    llc_per_chain: Tensor
    llc_mean: float
    llc_std: float
    init_loss: float
    loss_trace: Tensor
    is_draw: Tensor
    init_losses: Tensor
    diverged: Tensor
    trace_rise: float
    still_climbing: bool
    num_sampled: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    acceptance_trace: Tensor | None = None
    acceptance: float = math.nan
    llc_weak_localization: float = math.nan
    weak_localization_per_chain: Tensor | None = None
    localization_shift: float = math.nan
    localization_shift_z: float = math.nan
    exceeds_regular_bound: bool = False
    verdict: str = "ok"

    @property
    def num_chains(self) -> int:
        """Number of chains (K)."""
        return self.llc_per_chain.numel()

    @property
    def num_diverged(self) -> int:
        """Number of diverged chains."""
        return int(self.diverged.sum())

    @property
    def fraction_diverged(self) -> float:
        """Fraction of diverged chains."""
        return self.num_diverged / self.num_chains

    @property
    def llc_sem(self) -> float:
        """Standard error of ``llc_mean`` if the chains were independent: std / sqrt(finite)."""
        finite = self.num_chains - self.num_diverged
        return self.llc_std / math.sqrt(finite) if finite > 1 else math.nan

    @property
    def draws(self) -> Tensor:
        """Loss at the kept draws (K, num_draws)."""
        return self.loss_trace[:, self.is_draw]

    def summary(self) -> dict[str, float]:
        """Scalars for logging: the estimate and every diagnostic (the verdict aside)."""
        return {
            "llc_mean": self.llc_mean,
            "llc_std": self.llc_std,
            "init_loss": self.init_loss,
            "fraction_diverged": self.fraction_diverged,
            "trace_rise": self.trace_rise,
            "still_climbing": float(self.still_climbing),
            "acceptance": self.acceptance,
            "llc_weak_localization": self.llc_weak_localization,
            "localization_shift": self.localization_shift,
        }


def _trace_rise(draws: Tensor) -> float:
    """Rise of the mean trace over the second half, in units of the chains' spread there.

    The rise is the least-squares slope of the chain-averaged trace times the window length;
    the spread is the residual standard deviation of each chain about its own fitted line,
    averaged over chains (so a steady climb is not mistaken for spread).
    """
    half = draws[:, draws.shape[1] // 2 :]  # (K, T)
    steps = half.shape[1]
    if steps < 3:
        return 0.0
    t = torch.arange(steps, dtype=half.dtype)
    t = t - t.mean()
    centered = half - half.mean(dim=1, keepdim=True)
    slopes = (centered * t).sum(dim=1) / (t * t).sum()  # (K,)
    rise = float(slopes.mean()) * (steps - 1)  # slope of the mean trace = mean of slopes
    residual = centered - slopes[:, None] * t
    spread = float(residual.pow(2).sum(dim=1).div(steps - 2).sqrt().mean())
    if spread == 0.0:
        return 0.0 if rise == 0.0 else math.copysign(math.inf, rise)
    return rise / spread


def summarize_chains(
    loss_trace: Tensor,
    is_draw: Tensor,
    init_losses: Tensor,
    batch_of_step: Tensor,
    acceptance_trace: Tensor | None = None,
    *,
    n_beta: float,
    divergence_factor: float,
    climb_threshold: float,
    num_sampled: int,
    hyperparameters: dict[str, Any],
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> LLCResult:
    """Estimate and diagnose one restriction from its chains' loss traces (CPU tensors).

    Args:
        loss_trace: Minibatch losses (K, S), float64.
        is_draw: Bool (S,), the kept draws.
        init_losses: ``L_b(w*)`` per batch (num_batches,), float64.
        batch_of_step: Batch index used at each step (S,).
        acceptance_trace: MALA acceptance per step (K, S), NaN where not measured; None if
            not measured at all.
        n_beta: Inverse temperature times sample size.
        divergence_factor: See :attr:`LLCResult.diverged`.
        climb_threshold: See :attr:`LLCResult.still_climbing`.
        num_sampled: Coordinates sampled per chain.
        hyperparameters: Stored in the result.
        thresholds: Where the verdict turns.

    Returns:
        The :class:`LLCResult` (without a localisation check: see
        :func:`attach_localization_check`).

    """
    reference = init_losses[batch_of_step[is_draw]]  # L_{b(t)}(w*) at each draw (T,)
    init_loss = float(reference.mean())
    draws = loss_trace[:, is_draw]  # (K, T)

    threshold = init_loss + divergence_factor * (abs(init_loss) + 1.0 / n_beta)
    finite = torch.isfinite(loss_trace).all(dim=1)
    exploded = loss_trace.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).amax(dim=1) > threshold
    diverged = ~finite | exploded

    llc = n_beta * (draws - reference).mean(dim=1)
    llc = llc.masked_fill(diverged, math.nan)
    kept = llc[~diverged]
    llc_mean = float(kept.mean()) if kept.numel() else math.nan
    llc_std = float(kept.std()) if kept.numel() > 1 else math.nan
    trace_rise = _trace_rise(draws[~diverged]) if kept.numel() else math.nan
    still_climbing = bool(trace_rise > climb_threshold)
    acceptance = math.nan
    if acceptance_trace is not None:
        measured = acceptance_trace[~diverged]
        measured = measured[measured.isfinite()]
        acceptance = float(measured.mean()) if measured.numel() else math.nan
    sem = llc_std / math.sqrt(kept.numel()) if kept.numel() > 1 else math.nan
    above = exceeds_regular_bound(llc_mean, sem, num_sampled, thresholds)
    return LLCResult(
        llc_per_chain=llc,
        llc_mean=llc_mean,
        llc_std=llc_std,
        init_loss=init_loss,
        loss_trace=loss_trace,
        is_draw=is_draw,
        init_losses=init_losses,
        diverged=diverged,
        trace_rise=trace_rise,
        still_climbing=still_climbing,
        num_sampled=num_sampled,
        hyperparameters=hyperparameters,
        acceptance_trace=acceptance_trace,
        acceptance=acceptance,
        exceeds_regular_bound=above,
        verdict=verdict(
            num_diverged=int(diverged.sum()),
            still_climbing=still_climbing,
            acceptance=acceptance,
            localization_shift=math.nan,
            shift_z=math.nan,
            exceeds_regular=above,
            negative=below_zero(llc_mean, sem),
            thresholds=thresholds,
        ),
    )


def _sem(llc_per_chain: Tensor) -> float:
    """Standard error of the chain mean over the chains that did not diverge (NaN with < 2)."""
    kept = llc_per_chain[llc_per_chain.isfinite()]
    return float(kept.std() / math.sqrt(kept.numel())) if kept.numel() > 1 else math.nan


def attach_localization_check(
    result: LLCResult,
    check: LLCResult,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> LLCResult:
    """``result`` with the localisation check ``check`` (same chains, weaker localisation).

    Args:
        result: The estimate.
        check: The estimate of the same chains' budget at the weaker localisation.
        thresholds: Where the verdict turns.

    Returns:
        A copy of ``result`` with the check's fields and the verdict that includes them.

    """
    shift, z = localization_shift(result.llc_per_chain, check.llc_per_chain)
    return dataclasses.replace(
        result,
        llc_weak_localization=check.llc_mean,
        weak_localization_per_chain=check.llc_per_chain,
        localization_shift=shift,
        localization_shift_z=z,
        verdict=verdict(
            num_diverged=result.num_diverged,
            still_climbing=result.still_climbing,
            acceptance=result.acceptance,
            localization_shift=shift,
            shift_z=z,
            exceeds_regular=result.exceeds_regular_bound,
            negative=below_zero(result.llc_mean, _sem(result.llc_per_chain)),
            thresholds=thresholds,
        ),
    )
