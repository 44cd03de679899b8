"""Tests for lit_emergence.llc: exact SGLD identities, restrictions, bookkeeping, hygiene.

Known answers with the default settings are in ``test_llc_known_answers.py``, the diagnostics
and verdicts in ``test_llc_diagnostics.py``. Tests here that fix their own settings skip the
localisation check (``localization_check=None``), which would only double their cost.

Monte Carlo tolerances: chains within a restriction are independent, so the standard error of
``llc_mean`` is the std over chains / sqrt(chains) (``LLCResult.llc_sem``); each chain's own
mean already absorbs its autocorrelation. Exact identities are checked to 4.5 standard errors
(two-sided false-failure probability < 1e-5 for a normal error; with 64 chains the t-quantile
is within a few per cent of the normal one). Every run is seeded, so the tests are
deterministic; the tolerances say why they would also pass for other seeds.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from llc_helpers import (
    DUMMY_BATCHES,
    F64,
    Coordinates,
    one_thread,  # noqa: F401 (an autouse fixture)
)
from torch import Tensor, nn

from lit_emergence.llc import (
    DEFAULT_LOCALIZATION,
    DEFAULT_STEP_SCALE,
    attention_head_restriction,
    attention_head_restrictions,
    default_n_beta,
    estimate_llc,
    estimate_llc_many,
)
from lit_emergence.llc.chains import group_by_sampled_tensors
from lit_emergence.llc.restriction import resolve_restriction
from lit_emergence.llc.sampler import LangevinKernel
from lit_emergence.model import ParticleTransformer

# ---------------------------------------------------------------------------------------------
# The transition kernel, white box: the documented update, term by term
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop_sgld"])
def test_kernel_step_is_the_documented_update(sampler):
    g = torch.Generator().manual_seed(0)
    R, K, P = 2, 3, 5
    center = torch.randn(P, generator=g, dtype=F64)
    masks = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    eps = torch.tensor([1e-2, 4e-3], dtype=F64)
    gamma = torch.tensor([10.0, 3.0], dtype=F64)
    n_beta, alpha, delta = 7.0, 0.9, 0.1
    kernel = LangevinKernel(sampler, center, masks, K, eps, gamma, n_beta, alpha, delta)
    w = center + torch.randn(R, K, P, generator=g, dtype=F64)
    grad = torch.randn(R, K, P, generator=g, dtype=F64)
    noise = torch.randn(R, K, P, generator=g, dtype=F64) * masks[:, None, :]
    before = w.clone()
    kernel.step(w, grad, noise)

    m = masks[:, None, :].to(F64)
    e, gm = eps[:, None, None], gamma[:, None, None]
    drift = n_beta * grad + gm * (before - center)
    if sampler == "sgld":
        expected = before - m * e / 2 * drift + e.sqrt() * noise
    else:
        V = (1 - alpha) * grad**2  # first step from V = 0
        G = 1 / (V.sqrt() + delta)
        expected = before - m * e / 2 * G * drift + (e * G).sqrt() * noise
    torch.testing.assert_close(w, expected, rtol=1e-14, atol=1e-14)
    assert torch.equal(w[1][:, ~masks[1]], before[1][:, ~masks[1]])  # frozen stay exactly


# ---------------------------------------------------------------------------------------------
# Exact finite-temperature identities (stated in docs/llc.md)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 100.0])
def test_quadratic_is_exact_including_step_size_and_localization(gamma):
    """E[lambda_hat] = (n_beta/2) sum h_i / (a_i (1 - eps a_i/4)), a_i = n_beta h_i + gamma.

    gamma = 0 is the identity E[n_beta (L - L*)] = d/2 plus SGLD's exact discretisation
    factor; gamma = 100 checks the localisation and the 1/2 and sqrt(eps) factors.
    """
    h = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=F64)
    center = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=F64)
    n_beta, eps = 100.0, 2e-3

    def loss(w: Tensor, _: Tensor) -> Tensor:
        return 0.5 * (h * (w - center) ** 2).sum() + 1.5  # L* = 1.5, irrelevant

    result = estimate_llc(
        Coordinates(4, center),
        loss,
        DUMMY_BATCHES,
        n_beta=n_beta,
        step_size=eps,
        localization=gamma,
        num_chains=64,
        num_draws=2000,
        num_burnin=100,  # relaxation time 2/(eps a) <= 10 steps
        generator=0,
        localization_check=None,
    )
    a = n_beta * h + gamma
    exact = float((n_beta / 2 * h / (a * (1 - eps * a / 4))).sum())
    continuous = float((n_beta / 2 * h / a).sum())
    assert abs(exact - continuous) > 0.04  # the discretisation factor is resolved ...
    assert result.llc_sem < 0.012  # ... by the Monte Carlo error (4.5 SE < 0.055)
    assert abs(result.llc_mean - exact) < 4.5 * result.llc_sem
    assert result.init_loss == pytest.approx(1.5)
    assert result.num_diverged == 0 and not result.still_climbing


def test_quadratic_plus_quartic_gives_three_quarters():
    """gamma = 0, L - L* = w1^2 + w2^4: E[n_beta (L - L*)] = 1/2 + 1/4 for any n_beta.

    The quadratic coordinate's SGLD factor is exact (1 / (1 - eps a / 4), a = 2 n_beta);
    the quartic one has an O(eps) bias: its estimate alone moved by less than 0.001 between
    eps = 5e-4, 1e-3 and 2e-3 (same seed), so 0.01 is a generous allowance for it.
    """
    n_beta, eps = 100.0, 1e-3
    result = estimate_llc(
        Coordinates(2),
        lambda w, _: w[0] ** 2 + w[1] ** 4,
        DUMMY_BATCHES,
        n_beta=n_beta,
        step_size=eps,
        localization=0.0,
        num_chains=64,
        num_draws=4000,
        num_burnin=200,
        generator=1,
    )
    quadratic = 0.5 / (1 - eps * 2 * n_beta / 4)
    assert result.llc_sem < 0.01
    assert abs(result.llc_mean - (quadratic + 0.25)) < 4.5 * result.llc_sem + 0.01


# ---------------------------------------------------------------------------------------------
# Restrictions
# ---------------------------------------------------------------------------------------------


def coupled_loss(w: Tensor) -> Tensor:
    """A non-separable loss of 5 coordinates (quadratic + quartic couplings)."""
    return (
        (w**2 * torch.arange(1, 6, dtype=F64)).sum()
        + (w[0] * w[2]) ** 2
        + w[1] * w[4]
        + (w[3] - w[2]) ** 4
    )


def test_restricted_estimate_equals_lower_dimensional_model():
    """Masked coordinates sampled, others frozen == a model of only those coordinates.

    The noise is drawn for the sampled coordinates only, in parameter order, so both runs
    see the same noise and agree to round-off.
    """
    center = torch.tensor([0.4, -0.2, 0.1, 0.3, -0.5], dtype=F64)
    mask = torch.tensor([True, False, True, True, False])
    kwargs = dict(
        n_beta=50.0, step_size=3e-3, localization=10.0, num_chains=3, num_draws=60,
        num_burnin=10, generator=7,
    )  # fmt: skip
    full = estimate_llc(
        Coordinates(5, center),
        lambda w, _: coupled_loss(w),
        DUMMY_BATCHES,
        restrict={"w": mask},
        **kwargs,
    )

    class Reduced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.u = nn.Parameter(center[mask].clone())
            self.register_buffer("frozen", center.clone())

        def forward(self, _: Tensor) -> Tensor:
            return self.frozen.index_put((mask.nonzero().squeeze(1),), self.u)

    reduced = estimate_llc(Reduced(), lambda w, _: coupled_loss(w), DUMMY_BATCHES, **kwargs)
    assert full.num_sampled == reduced.num_sampled == 3
    torch.testing.assert_close(full.loss_trace, reduced.loss_trace, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(full.llc_per_chain, reduced.llc_per_chain, rtol=1e-10, atol=1e-12)


def test_restriction_by_names_freezes_whole_tensors():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.tensor([0.1, 0.2, 0.3], dtype=F64))
            self.b = nn.Parameter(torch.tensor([-0.1, 0.4], dtype=F64))

        def forward(self, _: Tensor) -> Tensor:
            return torch.cat([self.a, self.b])

    class OnlyA(Two):
        def __init__(self) -> None:
            super().__init__()
            b = self.b.detach().clone()
            del self.b
            self.register_buffer("b", b)

    kwargs = dict(
        n_beta=50.0, step_size=3e-3, localization=10.0, num_chains=2, num_draws=40,
        num_burnin=0, generator=3,
    )  # fmt: skip
    restricted = estimate_llc(
        Two(), lambda w, _: coupled_loss(w), DUMMY_BATCHES, restrict=["a"], **kwargs
    )
    lower = estimate_llc(OnlyA(), lambda w, _: coupled_loss(w), DUMMY_BATCHES, **kwargs)
    assert torch.equal(restricted.loss_trace, lower.loss_trace)


def make_transformer(seed: int = 0, dtype: torch.dtype = F64) -> ParticleTransformer:
    torch.manual_seed(seed)
    return ParticleTransformer(4, 2, d_model=16, n_layers=2, n_heads=4).to(dtype)


def make_particle_batches(count: int = 2, dtype: torch.dtype = F64) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [
        {
            "features": torch.randn(8, 6, 4, generator=g, dtype=dtype),
            "target": torch.randn(8, 6, 2, generator=g, dtype=dtype),
        }
        for _ in range(count)
    ]


def particle_loss(outputs: Tensor, batch: dict[str, Tensor]) -> Tensor:
    return F.mse_loss(outputs, batch["target"])


def test_attention_head_restriction_layout():
    model = make_transformer()
    D, Dh = model.d_model, model.head_dim
    masks = attention_head_restriction(model, 1, 2)
    rows = slice(2 * Dh, 3 * Dh)
    assert set(masks) == {
        f"blocks.1.attn.{p}.{k}" for p in ("q_proj", "k_proj", "v_proj") for k in ("weight", "bias")
    } | {"blocks.1.attn.out_proj.weight"}  # out_proj.bias belongs to no head
    for proj in ("q_proj", "k_proj", "v_proj"):
        weight = masks[f"blocks.1.attn.{proj}.weight"]
        assert weight[rows].all() and weight.sum() == Dh * D
        assert masks[f"blocks.1.attn.{proj}.bias"][rows].all()
    out = masks["blocks.1.attn.out_proj.weight"]
    assert out[:, rows].all() and out.sum() == D * Dh
    resolved = resolve_restriction(dict(model.named_parameters()), masks)
    assert sum(int(m.sum()) for m in resolved.values()) == 4 * Dh * D + 3 * Dh

    everything = attention_head_restrictions(model)
    assert list(everything)[:3] == ["model", "l0h0", "l0h1"] and len(everything) == 1 + 2 * 4
    with pytest.raises(ValueError, match="layer=2"):
        attention_head_restriction(model, 2, 0)
    with pytest.raises(ValueError, match="head=4"):
        attention_head_restriction(model, 0, 4)


def test_many_equals_separate_calls_on_particle_transformer():
    """Whole model + 2 heads in one vmap == three estimate_llc calls with the same seed."""
    model = make_transformer()
    batches = make_particle_batches()
    restrictions = {
        "model": None,
        "l0h1": attention_head_restriction(model, 0, 1),
        "l1h3": attention_head_restriction(model, 1, 3),
    }
    kwargs = dict(
        step_size=1e-3, localization=100.0, num_chains=2, num_draws=15, num_burnin=5,
        generator=3,
    )  # fmt: skip
    many = estimate_llc_many(model, particle_loss, batches, restrictions, **kwargs)
    assert list(many) == list(restrictions)
    for name, restriction in restrictions.items():
        alone = estimate_llc(model, particle_loss, batches, restrict=restriction, **kwargs)
        # float64; differences come only from how vmap batches the matmuls
        torch.testing.assert_close(many[name].loss_trace, alone.loss_trace, rtol=1e-10, atol=0)
        torch.testing.assert_close(many[name].llc_per_chain, alone.llc_per_chain)
    # the head's chains move: their losses differ from L(w*) and from each other
    head = many["l0h1"]
    assert head.num_sampled == 4 * 4 * 16 + 3 * 4
    assert not torch.equal(head.loss_trace[0], head.loss_trace[1])


def test_restrictions_are_grouped_by_the_tensors_they_sample():
    model = make_transformer()
    restrictions = attention_head_restrictions(model, include_model=True)
    parameters = dict(model.named_parameters())
    masks = {name: resolve_restriction(parameters, r) for name, r in restrictions.items()}
    groups = group_by_sampled_tensors(masks, list(parameters))
    # the whole model, then one group per attention block holding all of its heads
    assert groups == [["model"], [f"l0h{h}" for h in range(4)], [f"l1h{h}" for h in range(4)]]


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# one head on the CPU: one compiled graph, which is what the suite can afford there
FAST_PATHS = [
    pytest.param({"compile": True}, "sgld", "cpu", ["l1h3"], id="compile-cpu"),
    *[
        pytest.param(
            {"cuda_graph": True},
            sampler,
            "cuda",
            ["model", "l1h3"],
            marks=NEEDS_CUDA,
            id=f"cuda-graph-{sampler}",
        )
        for sampler in ("sgld", "rmsprop_sgld")
    ],
]


@pytest.mark.parametrize(("options", "sampler", "device", "components"), FAST_PATHS)
def test_fast_paths_equal_eager(options, sampler, device, components):
    """``compile`` (on the CPU) and CUDA-graph replay (on the GPU) run the same chains as eager.

    float64: compiling fuses and reorders element-wise work, a graph replays the same kernels,
    so both agree with eager to round-off (1e-9 relative), far below the chains' spread.
    """
    model = make_transformer().to(device)
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in make_particle_batches()]
    named = {"model": None, "l1h3": attention_head_restriction(model, 1, 3)}
    restrictions = {name: named[name] for name in components}
    kwargs = dict(
        sampler=sampler, step_size=1e-3, localization=100.0, num_chains=3, num_draws=8,
        num_burnin=2, generator=11,
    )  # fmt: skip
    eager = estimate_llc_many(model, particle_loss, batches, restrictions, **kwargs)
    fast = estimate_llc_many(model, particle_loss, batches, restrictions, **options, **kwargs)
    for name in restrictions:
        torch.testing.assert_close(
            fast[name].loss_trace, eager[name].loss_trace, rtol=1e-9, atol=1e-12
        )
        assert fast[name].hyperparameters["device"].startswith(device)
    assert not torch.equal(fast["l1h3"].loss_trace[0], fast["l1h3"].loss_trace[1])


# ---------------------------------------------------------------------------------------------
# Bookkeeping, divergence, hygiene
# ---------------------------------------------------------------------------------------------


def test_result_bookkeeping_thinning_and_default_settings():
    batches = [torch.full((256,), float(i)) for i in range(3)]
    center = torch.tensor([0.5, -0.5], dtype=F64)

    def loss(w: Tensor, batch: Tensor) -> Tensor:  # L_b(w*) = b
        return ((w - center) ** 2).sum() + batch.to(F64).mean()

    result = estimate_llc(
        Coordinates(2, center), loss, batches, step_size=1e-3, localization=1.0,
        num_chains=2, num_draws=7, num_burnin=4, thinning=2, generator=0,
    )  # fmt: skip
    steps = 4 + 7 * 2
    assert result.loss_trace.shape == (2, steps) and result.is_draw.shape == (steps,)
    assert result.is_draw.sum() == 7 and not result.is_draw[:4].any() and result.is_draw[4]
    assert result.draws.shape == (2, 7)
    # default n_beta = n / ln n, n = the 3 x 256 samples of the minibatches (no num_samples)
    assert result.hyperparameters["n_beta"] == pytest.approx(768 / math.log(768))
    assert result.hyperparameters["n_beta_rule"] == "n/ln(n)"
    assert result.hyperparameters["num_samples"] == 768
    torch.testing.assert_close(result.init_losses, torch.tensor([0.0, 1.0, 2.0], dtype=F64))
    assert result.loss_trace[0, 0] == pytest.approx(0.0)  # w_0 = w*, batch 0
    # draws at steps 4, 6, ..., 16 use batches 1, 0, 2, 1, 0, 2, 1: L* is paired with them
    reference = torch.tensor([s % 3 for s in range(4, steps, 2)], dtype=F64)
    assert result.init_loss == pytest.approx(float(reference.mean()))
    per_chain = result.hyperparameters["n_beta"] * (result.draws - reference).mean(1)
    torch.testing.assert_close(result.llc_per_chain, per_chain)
    assert set(result.summary()) >= {"llc_mean", "llc_std", "fraction_diverged", "acceptance"}

    def settings(**kwargs) -> dict:
        return estimate_llc(
            Coordinates(2, center), loss, batches, num_chains=1, num_draws=1, num_burnin=0,
            generator=0, **kwargs,
        ).hyperparameters  # fmt: skip

    given_n = settings(num_samples=10_000)
    assert given_n["n_beta"] == pytest.approx(10_000 / math.log(10_000))  # 1085.7
    assert given_n["num_samples"] == 10_000
    # the default step size keeps eps (n_beta + gamma) fixed; gamma defaults to 1
    assert given_n["step_size"] == pytest.approx(DEFAULT_STEP_SCALE / (given_n["n_beta"] + 1))
    assert given_n["step_size_rule"] == "0.05/(n_beta+gamma)"
    assert given_n["localization"] == DEFAULT_LOCALIZATION == 1.0
    minibatch = settings(n_beta="B/ln(B)")  # the older rule, still available
    assert minibatch["n_beta"] == pytest.approx(default_n_beta(256)) == pytest.approx(46.166, 1e-4)
    assert minibatch["n_beta_rule"] == "B/ln(B)" and minibatch["num_samples"] is None
    assert settings(n_beta=12.5)["n_beta_rule"] == "given"


def test_still_climbing_is_flagged():
    """eps gamma = 1e-4: relaxation takes ~2e4 steps; 200 steps from w* still climb."""
    kwargs = dict(
        n_beta=1.0, localization=1.0, num_chains=8, num_burnin=0, num_draws=200, generator=0,
        localization_check=None,
    )  # fmt: skip
    climbing = estimate_llc(
        Coordinates(20), lambda w, _: 0.5 * (w**2).sum(), DUMMY_BATCHES, step_size=1e-4,
        **kwargs,
    )  # fmt: skip
    assert climbing.still_climbing and climbing.trace_rise > 3
    assert climbing.verdict == "not-converged"
    settled = estimate_llc(
        Coordinates(20), lambda w, _: 0.5 * (w**2).sum(), DUMMY_BATCHES, step_size=0.2,
        **kwargs,
    )  # fmt: skip
    assert not settled.still_climbing


def test_partial_divergence_is_reported_not_raised():
    """Quartic loss, eps at the edge of stability: some chains escape to inf, not all."""
    with pytest.warns(RuntimeWarning, match="chains diverged"):
        result = estimate_llc(
            Coordinates(1), lambda w, _: (w**4).sum(), DUMMY_BATCHES, n_beta=100.0,
            step_size=0.03, localization=0.0, num_chains=8, num_draws=200, num_burnin=0,
            generator=0,
        )  # fmt: skip
    assert 0 < result.num_diverged < 8
    assert result.fraction_diverged == result.num_diverged / 8
    finite = result.llc_per_chain[~result.diverged]
    assert torch.isnan(result.llc_per_chain[result.diverged]).all() and finite.isfinite().all()
    assert result.llc_mean == pytest.approx(float(finite.mean()))


def test_exploding_but_finite_loss_counts_as_diverged():
    """eps a = 6 on a quadratic: |1 - eps a / 2| = 2, the chain doubles every step."""
    with pytest.warns(RuntimeWarning, match="estimate is NaN"):
        result = estimate_llc(
            Coordinates(3), lambda w, _: 0.5 * (w**2).sum(), DUMMY_BATCHES, n_beta=600.0,
            step_size=0.01, localization=0.0, num_chains=2, num_draws=30, num_burnin=0,
            generator=0,
        )  # fmt: skip
    assert result.loss_trace.isfinite().all() and result.diverged.all()
    assert math.isnan(result.llc_mean)


def test_divergence_of_one_restriction_leaves_the_others_intact():
    model = make_transformer()
    batches = make_particle_batches()
    restrictions = {"model": None, "l0h0": attention_head_restriction(model, 0, 0)}
    kwargs = dict(localization=100.0, num_chains=2, num_draws=10, num_burnin=0, generator=5)
    with pytest.warns(RuntimeWarning, match="'model'"):
        many = estimate_llc_many(
            model, particle_loss, batches, restrictions,
            step_size={"model": 1e4, "l0h0": 1e-3}, **kwargs,
        )  # fmt: skip
    assert many["model"].diverged.all() and math.isnan(many["model"].llc_mean)
    alone = estimate_llc(
        model, particle_loss, batches, restrict=restrictions["l0h0"], step_size=1e-3, **kwargs
    )
    assert not many["l0h0"].diverged.any()
    torch.testing.assert_close(many["l0h0"].loss_trace, alone.loss_trace, rtol=1e-10, atol=0)


def test_model_and_global_state_untouched():
    model = make_transformer(dtype=torch.float32)
    model.train()
    model.embed.bias.requires_grad_(False)  # frozen by the user: must stay so, not sampled
    calls = []
    model.blocks[0].attn.register_forward_hook(lambda *args: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    rng = torch.get_rng_state()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the huge step diverges
        for step_size in (1e-3, 1e4):
            result = estimate_llc(
                model, particle_loss, make_particle_batches(dtype=torch.float32),
                step_size=step_size, num_chains=2, num_draws=5, num_burnin=2, generator=0,
            )  # fmt: skip
    assert result.diverged.all()  # reported, not raised
    assert result.num_sampled == model.num_parameters() - model.d_model
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in model.named_parameters():
        assert p.grad is None and p.requires_grad == flags[n], n
    assert not calls  # hooks of the original model do not see the sampler's tensors


def test_callable_under_inference_mode():
    """Lightning runs validation hooks in inference mode; the estimator must still work."""
    model = make_transformer(dtype=torch.float32)
    kwargs = dict(step_size=1e-3, num_chains=2, num_draws=4, num_burnin=0, generator=0)
    expected = estimate_llc(
        model, particle_loss, make_particle_batches(dtype=torch.float32), **kwargs
    )
    with torch.inference_mode():
        batches = make_particle_batches(dtype=torch.float32)  # inference tensors
        result = estimate_llc(model, particle_loss, batches, **kwargs)
    assert torch.equal(result.loss_trace, expected.loss_trace)


def test_seeds_reproduce_and_differ():
    def run(generator):
        return estimate_llc(
            Coordinates(3), lambda w, _: 0.5 * (w**2).sum(), DUMMY_BATCHES, n_beta=10.0,
            step_size=1e-2, num_chains=2, num_draws=5, num_burnin=0, generator=generator,
        ).loss_trace  # fmt: skip

    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))
    assert torch.equal(run(torch.Generator().manual_seed(9)), run(torch.Generator().manual_seed(9)))
    assert run(None).isfinite().all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_size": 0.0}, "step_size"),
        ({"localization": -1.0}, "localization"),
        ({"num_chains": 0}, "num_chains"),
        ({"num_burnin": -1}, "num_burnin"),
        ({"thinning": 0}, "thinning"),
        ({"sampler": "hmc"}, "sampler"),
        ({"n_beta": -2.0}, "n_beta"),
        ({"n_beta": "n/log(n)"}, "n_beta='n/log\\(n\\)' is unknown"),
        ({"n_beta": None, "num_samples": 1}, "num_samples=1"),
        ({"localization_check": 1.0}, "localization_check=1.0 must be a factor > 1"),
        ({"acceptance_every": 0}, "acceptance_every=0"),
        ({"restrict": ["nope"]}, "unknown parameter 'nope'"),
        ({"restrict": {"w": torch.ones(2, dtype=torch.bool)}}, "shape"),
        ({"restrict": {"w": torch.zeros(3, dtype=torch.bool)}}, "samples no coordinate"),
        ({"batches": []}, "batches is empty"),
        ({"loss_fn": lambda w, _: w**2}, "scalar"),
        ({"cuda_graph": True}, "cuda_graph=True needs a CUDA device"),
    ],
)
def test_invalid_settings_raise_one_line_value_error(kwargs, message):
    arguments = {
        "model": Coordinates(3),
        "loss_fn": lambda w, _: (w**2).sum(),
        "batches": DUMMY_BATCHES,
        "n_beta": 1.0,
        "num_draws": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message) as error:
        estimate_llc(**arguments)
    assert "\n" not in str(error.value)
