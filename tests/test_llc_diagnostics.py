"""Diagnostics and verdicts of LLC estimates, calibration sweeps, and the prefix cache.

The MALA acceptance is checked against an independent numpy computation of the
Metropolis-Hastings ratio from the Gaussian proposal densities, both for single proposals and
in expectation over a chain's stationary distribution (Monte Carlo with 10^6 samples); the
estimator's value must lie within 4.5 standard errors of the chains' per-chain means.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch
from llc_helpers import (
    DUMMY_BATCHES,
    F64,
    Coordinates,
    one_thread,  # noqa: F401 (an autouse fixture)
)
from test_llc_known_answers import mse, regression
from torch import Tensor, nn

from lit_emergence.llc import (
    attention_head_restriction,
    attention_head_restrictions,
    calibration_grid,
    estimate_llc,
    estimate_llc_many,
)
from lit_emergence.llc.diagnostics import (
    VerdictThresholds,
    below_zero,
    exceeds_regular_bound,
    localization_shift,
    mala_log_acceptance,
    verdict,
)
from lit_emergence.model import ParticleTransformer


def same(a: Tensor, b: Tensor) -> None:
    """Bitwise equal, NaN (not measured) where the other is NaN."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# MALA acceptance
# ---------------------------------------------------------------------------------------------


def log_gaussian(x: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """log N(x; mean, diag(variance)) summed over the last axis (up to the shared constant)."""
    return (-((x - mean) ** 2) / (2 * variance) - 0.5 * np.log(variance)).sum(-1)


def test_mala_formula_is_the_metropolis_hastings_ratio_of_the_proposal():
    """Random energies, forces and a per-coordinate scale (as RMSProp-SGLD has); two frozen."""
    rng = np.random.default_rng(0)
    P = 6
    w = rng.normal(size=(5, P))
    force = rng.normal(size=(5, P)) * 3
    force_new = rng.normal(size=(5, P)) * 3
    xi = rng.normal(size=(5, P))
    scale = rng.uniform(0.05, 0.3, size=(5, P))
    frozen = np.array([False, True, False, False, True, False])
    force[:, frozen] = force_new[:, frozen] = xi[:, frozen] = 0.0
    u_old, u_new = rng.normal(size=5), rng.normal(size=5)
    w_new = w - scale**2 / 2 * force + scale * xi  # the proposal
    live = ~frozen
    forward = log_gaussian(w_new[:, live], (w - scale**2 / 2 * force)[:, live], scale[:, live] ** 2)
    backward = log_gaussian(
        w[:, live], (w_new - scale**2 / 2 * force_new)[:, live], scale[:, live] ** 2
    )
    expected = u_old - u_new + backward - forward
    got = mala_log_acceptance(
        *(torch.from_numpy(a) for a in (u_old, u_new, force, force_new, xi, scale))
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def gaussian_acceptance_oracle(a: np.ndarray, eps: float, samples: int = 1_000_000) -> float:
    """E[min(1, alpha)] of SGLD on U = sum a_i w_i^2 / 2, at the chain's stationary law.

    SGLD on a quadratic is Gaussian with variance 1 / (a (1 - eps a / 4)) per coordinate
    (docs/llc.md); the proposal from w is N(w - eps a w / 2, eps).
    """
    rng = np.random.default_rng(1)
    w = rng.normal(size=(samples, a.size)) / np.sqrt(a * (1 - eps * a / 4))
    w_new = w - eps / 2 * a * w + np.sqrt(eps) * rng.normal(size=w.shape)
    energy = lambda v: (a * v * v).sum(-1) / 2  # noqa: E731
    variance = np.full(a.size, eps)
    log_alpha = (
        energy(w)
        - energy(w_new)
        + log_gaussian(w, w_new - eps / 2 * a * w_new, variance)
        - log_gaussian(w_new, w - eps / 2 * a * w, variance)
    )
    return float(np.minimum(1.0, np.exp(log_alpha)).mean())


@pytest.mark.parametrize("restricted", [False, True], ids=["all", "restricted"])
def test_acceptance_matches_the_exact_expectation_on_a_gaussian(restricted):
    """L = sum h_i w_i^2 / 2 with eps a_i in 0.6-1.8: acceptance well below 1, known exactly.

    Restricted to coordinates 0 and 2, the frozen ones must not count: the oracle is the
    two-coordinate chain.
    """
    h = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=F64)
    n_beta, gamma, eps = 10.0, 2.0, 0.06  # a = n_beta h + gamma = 12, 22, 32, 7
    mask = torch.tensor([True, False, True, False])
    result = estimate_llc(
        Coordinates(4), lambda w, _: (h * w * w).sum() / 2, DUMMY_BATCHES, n_beta=n_beta,
        localization=gamma, step_size=eps, num_chains=64, num_draws=300, num_burnin=100,
        acceptance_every=1, localization_check=None, generator=0,
        restrict={"w": mask} if restricted else None,
    )  # fmt: skip
    a = (n_beta * h + gamma).numpy()
    expected = gaussian_acceptance_oracle(a[mask.numpy()] if restricted else a, eps)
    per_chain = result.acceptance_trace.nanmean(dim=1)
    standard_error = float(per_chain.std() / math.sqrt(per_chain.numel()))
    assert 0.3 < expected < 0.9  # the test can tell a wrong formula from a right one
    assert result.acceptance_trace[:, :100].isnan().all()  # burn-in is not measured
    assert abs(result.acceptance - expected) < 4.5 * standard_error + 2e-3  # oracle's MC error


def test_acceptance_with_one_minibatch_reuses_the_next_steps_gradient():
    """One minibatch: the gradient at the proposal is the next step's; reused, not recomputed.

    The same data given as two identical minibatches takes the path that recomputes: the
    chains, losses and acceptances must be identical.
    """
    model, batches, _ = regression(n=512, batch_size=512)
    kwargs = dict(
        num_samples=512, num_chains=2, num_draws=20, num_burnin=2, acceptance_every=1,
        localization_check=None, generator=0,
    )  # fmt: skip
    once = estimate_llc(model, mse, batches, **kwargs)
    twice = estimate_llc(model, mse, batches * 2, **kwargs)
    assert torch.equal(once.loss_trace, twice.loss_trace)
    same(once.acceptance_trace, twice.acceptance_trace)
    assert once.acceptance_trace[:, 2:].isfinite().all()


@pytest.mark.parametrize(("scale", "expected"), [(1.0, "diverged"), (0.4, "not-converged")])
def test_too_large_a_step_is_flagged(scale, expected):
    """eps = scale / n_beta on the regular model, 20 and 8 times the default: eps a ~ 2 and
    0.8 (h ~ 2). Every contribution is inflated by 1 / (1 - eps a / 4) and more by the
    minibatch noise, which grows with the step: at 20 times the estimate exceeds 1.5 d/2
    (diverged), at 8 times (about +60 %) the MALA acceptance is below 0.9 (not-converged)."""
    model, batches, _ = regression()
    n_beta = 2048 / math.log(2048)
    said = pytest.warns(RuntimeWarning, match="left the basin")
    with said if expected == "diverged" else contextlib.nullcontext():
        result = estimate_llc(
            model, mse, batches, num_samples=2048, step_size=scale / n_beta, num_chains=8,
            num_draws=100, num_burnin=50, localization_check=None, generator=0,
        )  # fmt: skip
    assert result.llc_mean > 1.3 * 14
    assert result.acceptance < VerdictThresholds().min_acceptance
    assert result.verdict == expected


# ---------------------------------------------------------------------------------------------
# Localisation check and verdicts
# ---------------------------------------------------------------------------------------------


def test_localisation_check_runs_the_same_chains_at_a_quarter_of_gamma():
    """The check is the estimate at gamma / 4 with the same seed: identical chains."""
    loss = lambda w, _: (torch.arange(1, 4, dtype=F64) * w * w).sum()  # noqa: E731
    kwargs = dict(n_beta=20.0, step_size=1e-3, num_chains=3, num_draws=50, num_burnin=10)
    with pytest.warns(UserWarning, match="localisation-dominated"):
        checked = estimate_llc(
            Coordinates(3), loss, DUMMY_BATCHES, localization=40.0, generator=4, **kwargs
        )
    alone = estimate_llc(
        Coordinates(3), loss, DUMMY_BATCHES, localization=10.0, generator=4,
        localization_check=None, **kwargs,
    )  # fmt: skip
    torch.testing.assert_close(checked.weak_localization_per_chain, alone.llc_per_chain)
    assert checked.llc_weak_localization == pytest.approx(alone.llc_mean)
    strong, weak = checked.llc_per_chain.mean(), alone.llc_per_chain.mean()
    assert checked.localization_shift == pytest.approx(float((weak - strong) / weak))
    # n_beta h = 20-60 against gamma = 40: localisation-dominated, and said so
    assert checked.verdict == "localisation-dominated"


def test_an_estimate_away_from_a_minimum_is_not_at_minimum():
    """w* = 0 on the slope of K(w) = |w - 1|^2 / 2 (gradient -1 per coordinate): the chains
    drift towards w = 1, where the loss is lower, and the estimate is far below zero (about
    -n_beta * 0.5 * 3 at full relaxation; here tens of standard errors below 0)."""
    loss = lambda w, _: 0.5 * ((w - 1.0) ** 2).sum()  # noqa: E731
    result = estimate_llc(
        Coordinates(3), loss, DUMMY_BATCHES, n_beta=100.0, localization=1.0, step_size=1e-3,
        num_chains=4, num_draws=200, num_burnin=50, localization_check=None, generator=0,
    )  # fmt: skip
    assert result.llc_mean < -10
    assert result.verdict == "not-at-minimum"


def test_one_warning_names_every_localisation_dominated_estimate():
    loss = lambda w, _: (w * w).sum()  # noqa: E731
    with pytest.warns(UserWarning, match="localisation-dominated") as caught:
        estimate_llc_many(
            Coordinates(2), loss, DUMMY_BATCHES, {"a": None, "b": ["w"]}, n_beta=10.0,
            localization=100.0, step_size=1e-3, num_chains=4, num_draws=200, generator=0,
        )  # fmt: skip
    messages = [str(w.message) for w in caught if "localisation" in str(w.message)]
    assert len(messages) == 1 and "'a'" in messages[0] and "'b'" in messages[0]
    assert "\n" not in messages[0]


NAN = math.nan


@pytest.mark.parametrize(
    ("diverged", "climbing", "acceptance", "shift", "z", "expected"),
    [
        (1, True, 0.1, 0.5, 9, "diverged"),
        (0, False, 1.0, 0.0, 0, "diverged:exceeds"),  # above the regular bound
        (0, True, 1.0, 0.5, 9, "not-converged"),
        (0, False, 0.85, 0.5, 9, "not-converged"),  # acceptance < 0.9
        (0, False, 0.99, 0.2, 9, "localisation-dominated"),
        (0, True, 0.5, 0.5, 9, "not-at-minimum:negative"),  # below zero: no LLC to converge to
        (1, False, 1.0, 0.0, 0, "diverged:negative"),  # a diverged chain comes first
        (0, False, 0.99, 0.2, 1, "ok"),  # a shift within noise
        (0, False, 0.99, 0.05, 9, "ok"),  # a significant but small shift
        (0, False, NAN, NAN, NAN, "ok"),  # nothing measured turns no verdict
    ],
)
def test_verdict_precedence_and_thresholds(diverged, climbing, acceptance, shift, z, expected):
    found = verdict(
        num_diverged=diverged,
        still_climbing=climbing,
        acceptance=acceptance,
        localization_shift=shift,
        shift_z=z,
        exceeds_regular=expected.endswith(":exceeds"),
        negative=expected.endswith(":negative"),
    )
    assert found == expected.split(":")[0]


def test_below_zero_needs_two_standard_errors():
    assert below_zero(-3.0, 1.0)  # -3 + 2 < 0
    assert not below_zero(-1.5, 1.0)  # within 2 standard errors of 0
    assert below_zero(-0.1, math.nan)  # one chain: the estimate decides
    assert not below_zero(0.0, math.nan)


def test_regular_bound():
    assert exceeds_regular_bound(16.0, 0.1, 20)  # 16 > 1.5 x 10 by 2 standard errors
    assert not exceeds_regular_bound(16.0, 0.6, 20)  # within 2 standard errors of 15
    assert not exceeds_regular_bound(14.0, math.nan, 20)
    assert exceeds_regular_bound(16.0, math.nan, 20)  # one chain: the estimate decides


def test_localization_shift_values():
    strong = torch.tensor([1.0, 2.0, math.nan, 3.0], dtype=F64)
    weak = torch.tensor([2.0, 2.5, 1.0, 4.5], dtype=F64)
    shift, z = localization_shift(strong, weak)
    assert shift == pytest.approx((3.0 - 2.0) / 3.0)  # over the chains finite in both
    differences = torch.tensor([1.0, 0.5, 1.5], dtype=F64)
    assert z == pytest.approx(1.0 / float(differences.std() / math.sqrt(3)))
    assert math.isnan(localization_shift(strong, -weak)[0])  # weaker estimate not positive
    one_shift, one_z = localization_shift(strong[:1], weak[:1])
    assert one_shift == pytest.approx(0.5) and one_z == math.inf


def test_diverged_chains_give_the_diverged_verdict():
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = estimate_llc(
            Coordinates(3), lambda w, _: 0.5 * (w**2).sum(), DUMMY_BATCHES, n_beta=600.0,
            step_size=0.01, localization=0.0, num_chains=2, num_draws=30, num_burnin=0,
            generator=0,
        )  # fmt: skip
    assert result.verdict == "diverged"


def test_chains_that_leave_the_basin_are_flagged_diverged():
    """L = 1 - exp(-50 |w|^2): a narrow well in a flat plateau. eps a ~ 100 throws the chains
    onto the plateau, where the loss is bounded (no explosion) and flat (the MALA acceptance
    is high), but the estimate, ~n_beta = 100, is far above d/2 = 1."""
    loss = lambda w, _: 1 - torch.exp(-50 * (w * w).sum())  # noqa: E731
    with pytest.warns(RuntimeWarning, match="left the basin"):
        result = estimate_llc(
            Coordinates(2), loss, DUMMY_BATCHES, n_beta=100.0, step_size=0.01,
            localization=0.0, num_chains=4, num_draws=50, num_burnin=10, generator=0,
        )  # fmt: skip
    assert result.num_diverged == 0 and result.exceeds_regular_bound
    assert result.llc_mean > 50 and result.verdict == "diverged"
    well_sampled = estimate_llc(  # eps a = 0.1 in the well (curvature n_beta 100)
        Coordinates(2), loss, DUMMY_BATCHES, n_beta=100.0, step_size=1e-5, localization=0.0,
        num_chains=4, num_draws=200, generator=0,
    )  # fmt: skip
    assert not well_sampled.exceeds_regular_bound and well_sampled.llc_mean < 1.2


# ---------------------------------------------------------------------------------------------
# Calibration sweeps
# ---------------------------------------------------------------------------------------------


def test_calibration_grid_is_one_call_with_every_setting():
    loss = lambda w, _: (torch.arange(1, 4, dtype=F64) * w * w).sum()  # noqa: E731
    restrictions, eps, gamma = calibration_grid(None, [1e-3, 3e-3], [1.0, 10.0], name="model:")
    assert list(restrictions) == [
        "model:eps=0.001,gamma=1",
        "model:eps=0.001,gamma=10",
        "model:eps=0.003,gamma=1",
        "model:eps=0.003,gamma=10",
    ]
    common = dict(n_beta=50.0, num_chains=2, num_draws=30, num_burnin=5, generator=3)
    sweep = estimate_llc_many(
        Coordinates(3), loss, DUMMY_BATCHES, restrictions, step_size=eps, localization=gamma,
        localization_check=None, **common,
    )  # fmt: skip
    for name, result in sweep.items():
        assert result.hyperparameters["step_size"] == eps[name]
        assert result.hyperparameters["localization"] == gamma[name]
        alone = estimate_llc(
            Coordinates(3), loss, DUMMY_BATCHES, step_size=eps[name], localization=gamma[name],
            localization_check=None, **common,
        )  # fmt: skip
        # one vmap for the whole grid, the noise of each entry its own: the same chains
        torch.testing.assert_close(result.loss_trace, alone.loss_trace, rtol=1e-12, atol=0)
        assert result.verdict in {"ok", "localisation-dominated", "not-converged"}


# ---------------------------------------------------------------------------------------------
# Activations kept per minibatch (lit_emergence.llc.prefix)
# ---------------------------------------------------------------------------------------------


def transformer_and_batches() -> tuple[ParticleTransformer, list[dict[str, Tensor]]]:
    torch.manual_seed(0)
    model = ParticleTransformer(4, 2, d_model=16, n_layers=2, n_heads=4).double()
    g = torch.Generator().manual_seed(11)
    batches = [
        {
            "features": torch.randn(8, 6, 4, generator=g, dtype=F64),
            "target": torch.randn(8, 6, 2, generator=g, dtype=F64),
        }
        for _ in range(2)
    ]
    return model, batches


def particle_loss(outputs: Tensor, batch: dict[str, Tensor]) -> Tensor:
    return torch.nn.functional.mse_loss(outputs, batch["target"])


def test_prefix_cache_keeps_what_runs_before_a_heads_block_and_changes_nothing():
    from lit_emergence.llc import chains

    model, batches = transformer_and_batches()
    kept = []
    build = chains.PrefixCache.build

    def spy(*args, **kwargs):
        cache = build(*args, **kwargs)
        kept.append(None if cache is None else cache.modules)
        return cache

    restrictions = attention_head_restrictions(model)
    kwargs = dict(
        n_beta=10.0, step_size=1e-3, num_chains=2, num_draws=10, num_burnin=2, generator=0
    )
    chains.PrefixCache.build = spy
    try:
        cached = estimate_llc_many(model, particle_loss, batches, restrictions, **kwargs)
    finally:
        chains.PrefixCache.build = build
    # the whole model keeps nothing; block 0's heads keep the embedding and their LayerNorm;
    # block 1's heads also keep block 0 (each group is followed by its localisation check)
    assert kept == [None, ["embed", "blocks.0.ln_attn"], ["embed", "blocks.0", "blocks.1.ln_attn"]]
    recomputed = estimate_llc_many(
        model, particle_loss, batches, restrictions, cache_prefix=False, **kwargs
    )
    for name in restrictions:
        assert torch.equal(cached[name].loss_trace, recomputed[name].loss_trace), name
        same(cached[name].acceptance_trace, recomputed[name].acceptance_trace)


class _Peek(nn.Module):
    """Reads another module's weight without owning it: invisible to the module order."""

    def __init__(self, other: nn.Linear) -> None:
        super().__init__()
        self.other = [other]  # a list, so that it is not registered as a submodule

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.other[0].weight.T


class _Tricky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3).double()
        self.second = nn.Linear(3, 3).double()
        self.peek = _Peek(self.second)

    def forward(self, x: Tensor) -> Tensor:
        peeked = self.peek(x)  # runs before `second` starts, depends on `second.weight`
        return self.second(torch.tanh(self.first(x))) + peeked


def test_prefix_cache_that_would_be_wrong_is_not_used():
    """``peek`` finishes before ``second`` starts but reads ``second.weight``: the self-check
    catches it, warns, and the estimate equals the one computed without any cache."""
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(16, 3, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64))
    ]
    kwargs = dict(
        restrict=["second.weight"], n_beta=20.0, step_size=1e-3, num_chains=2, num_draws=10,
        num_burnin=0, localization_check=None, generator=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = _Tricky()
    with pytest.warns(RuntimeWarning, match="could not be reused"):
        checked = estimate_llc(model, mse, batches, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = estimate_llc(model, mse, batches, cache_prefix=False, **kwargs)
    assert torch.equal(checked.loss_trace, plain.loss_trace)


def test_head_restriction_of_the_last_block_keeps_earlier_blocks():
    """One head alone: its group keeps the first block (one forward per minibatch)."""
    from lit_emergence.llc import chains

    model, batches = transformer_and_batches()
    cache = chains.PrefixCache.build
    found = []

    def spy(*args, **kwargs):
        result = cache(*args, **kwargs)
        found.append(result.modules if result else None)
        return result

    chains.PrefixCache.build = spy
    try:
        estimate_llc(
            model, particle_loss, batches, restrict=attention_head_restriction(model, 1, 0),
            n_beta=10.0, num_chains=1, num_draws=2, num_burnin=0, localization_check=None,
        )  # fmt: skip
    finally:
        chains.PrefixCache.build = cache
    assert found == [["embed", "blocks.0", "blocks.1.ln_attn"]]
