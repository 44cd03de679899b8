"""Gauge symmetries of attention heads: invariance, invariants, canonical gauge, matching, LLC.

Tolerances: float64 models, where a transformation with condition number k <= 100 costs
round-off of order 1e-16 * k^2 ~ 1e-12 relative; the bounds below (1e-9 ... 1e-5) leave orders
of magnitude of room and still fail on any real error (a wrong transpose changes results at
order 1). Every random draw is seeded.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import read_rows, tiny_datamodule, train

from lit_emergence.callbacks import GaugeInvariantMonitor, LogSchedule
from lit_emergence.functional import attention_distance_correlation, collision_score, neighbour_mask
from lit_emergence.gauge import (
    GaugeTransform,
    apply_gauge,
    canonical_gauge,
    estimate_llc_canonical,
    feature_space_qk,
    gauge_imbalance,
    head_features,
    head_invariants,
    identity_gauge,
    match_heads,
    match_models,
    random_gauge,
)
from lit_emergence.gauge.heads import read_heads
from lit_emergence.gauge.invariants import effective_rank
from lit_emergence.gauge.transforms import random_invertible
from lit_emergence.llc import attention_head_restriction, estimate_llc
from lit_emergence.model import ParticleTransformer

# ----------------------------------------------------------------------------- helpers


def random_model(seed: int = 0, d_model: int = 16, n_heads: int = 4) -> ParticleTransformer:
    """A float64 model whose weights and biases are all non-trivial (std 0.3).

    The default initialisation has zero biases and near-uniform attention, which would let a
    wrong bias transform or a wrong head order pass unnoticed.
    """
    model = ParticleTransformer(4, 2, d_model=d_model, n_layers=2, n_heads=n_heads).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(1.0)  # gains near 1, as in a trained model
    return model.eval()


def permuted(per_head: torch.Tensor, permutation: torch.Tensor, head_axis: int = 1) -> torch.Tensor:
    """``per_head`` with slot h of layer l holding old head ``permutation[l, h]``.

    ``per_head`` has the layer axis just before ``head_axis``.
    """
    layers = per_head.shape[head_axis - 1]
    moved = [
        per_head.select(head_axis - 1, layer).index_select(head_axis - 1, permutation[layer])
        for layer in range(layers)
    ]
    return torch.stack(moved, dim=head_axis - 1)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Real simulator samples (the tiny datamodule of the callback tests), float64 features."""
    datamodule = tiny_datamodule(tmp_path_factory.mktemp("cache"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = datamodule.probe_batch(32, seed=0)
    batch["features"] = batch["features"].double()
    return batch


def head_scores(model: ParticleTransformer, batch: dict[str, torch.Tensor]) -> tuple:
    """Collision scores and attention-distance correlations per head, (L, H) each."""
    _, attention = model(batch["features"], return_attention=True)
    neighbours = neighbour_mask(batch["positions"], batch["radii"], 0.25)
    return (
        collision_score(attention, neighbours),
        attention_distance_correlation(attention, batch["positions"].double()),
    )


# ----------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("condition_number", [1.0, 10.0, 100.0])
def test_random_gauge_keeps_outputs_and_permutes_attention_heads(condition_number):
    model = random_model()
    features = torch.randn(3, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    padding = torch.ones(3, 7, dtype=torch.bool)
    padding[1, 5:] = False
    transform = random_gauge(model, condition_number, permute_heads=True, generator=2)
    qk_cond, ov_cond = transform.condition_numbers()
    torch.testing.assert_close(qk_cond, torch.full_like(qk_cond, condition_number))
    torch.testing.assert_close(ov_cond, torch.full_like(ov_cond, condition_number))
    assert not torch.equal(transform.permutation, identity_gauge(model).permutation)

    moved = apply_gauge(model, transform)
    for mask in (None, padding):
        output, attention = model(features, mask, return_attention=True)
        output_moved, attention_moved = moved(features, mask, return_attention=True)
        # The bound: 1e-5 relative in float64 (observed ~1e-15).
        assert relative_difference(output_moved, output) <= 1e-5
        # Attention (B, L, H, N, N): the head axis is permuted, nothing else changes.
        expected = permuted(attention, transform.permutation, head_axis=2)
        torch.testing.assert_close(attention_moved, expected, rtol=0, atol=1e-10)
    # The weights themselves did change, and the original model is untouched (a copy).
    assert not torch.allclose(
        moved.blocks[0].attn.q_proj.weight, model.blocks[0].attn.q_proj.weight
    )
    assert torch.equal(
        apply_gauge(model, identity_gauge(model)).blocks[1].attn.v_proj.bias,
        model.blocks[1].attn.v_proj.bias,
    )


def test_gauge_transformation_in_float32_is_exact_up_to_round_off():
    model = random_model().float()
    features = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(3))
    moved = apply_gauge(model, random_gauge(model, 100.0, permute_heads=True, generator=4))
    # float32: eps 6e-8 times the condition number 100, times a small growth factor.
    assert relative_difference(moved(features), model(features)) < 1e-4


@pytest.mark.parametrize("seed", range(12))
def test_scores_and_invariants_are_gauge_invariant_on_simulated_data(probe, seed):
    """Property test: many random gauges (condition number log-uniform in [10, 100])."""
    model = random_model(seed=100 + seed)
    generator = torch.Generator().manual_seed(seed)
    condition_number = float(10 ** (1 + torch.rand((), generator=generator, dtype=torch.float64)))
    transform = random_gauge(model, condition_number, permute_heads=True, generator=generator)
    moved = apply_gauge(model, transform)
    permutation = transform.permutation

    collision, correlation = head_scores(model, probe)
    collision_moved, correlation_moved = head_scores(moved, probe)
    assert collision.std() > 0.01  # non-trivial heads: the check has something to permute
    # Per-head measurements are invariant and follow their heads (float64, atol 1e-9).
    torch.testing.assert_close(collision_moved, permuted(collision, permutation), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        correlation_moved, permuted(correlation, permutation), rtol=0, atol=1e-9
    )

    invariants = head_invariants(model).permute_heads(permutation)
    invariants_moved = head_invariants(moved)
    for name, value in invariants.scalars().items():
        torch.testing.assert_close(
            invariants_moved.scalars()[name], value, rtol=1e-8, atol=0, msg=name
        )
    torch.testing.assert_close(
        invariants_moved.qk_singular_values, invariants.qk_singular_values, rtol=1e-8, atol=1e-12
    )
    torch.testing.assert_close(
        invariants_moved.ov_singular_values, invariants.ov_singular_values, rtol=1e-8, atol=1e-12
    )
    torch.testing.assert_close(
        invariants_moved.feature_qk, invariants.feature_qk, rtol=1e-8, atol=1e-12
    )

    # Not invariant: the raw query weights' norms change by tens of per cent or more.
    query_norm = read_heads(model.blocks[0].attn).query.norm(dim=(1, 2))
    query_norm_moved = read_heads(moved.blocks[0].attn).query.norm(dim=(1, 2))
    change = (query_norm_moved / query_norm[permutation[0]] - 1).abs()
    assert change.max() > 0.1, (condition_number, change)


def test_feature_space_qk_is_the_bilinear_part_of_block_0_scores():
    model = random_model(seed=5)
    with torch.no_grad():  # no biases before the scores: the score is then exactly bilinear
        model.embed.bias.zero_()
        model.blocks[0].ln_attn.bias.zero_()
        model.blocks[0].attn.q_proj.bias.zero_()
        model.blocks[0].attn.k_proj.bias.zero_()
    features = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    embedded = model.embed(features)
    norm = model.blocks[0].ln_attn
    normalised = norm(embedded)
    sigma = (embedded.var(dim=-1, unbiased=False) + norm.eps).sqrt()
    attn = model.blocks[0].attn
    form = feature_space_qk(model)
    for head in range(attn.n_heads):
        rows = attn.head_slice(head)
        scores = attn.q_proj(normalised)[:, rows] @ attn.k_proj(normalised)[:, rows].T
        expected = features @ form[head] @ features.T / (sigma[:, None] * sigma[None, :])
        torch.testing.assert_close(scores, expected, rtol=1e-10, atol=1e-12)


def test_effective_rank_limits():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(effective_rank(values), torch.tensor([4.0, 1.0, 0.0]))


def test_bad_arguments_raise_one_line_errors():
    model = random_model()
    with pytest.raises(ValueError, match=r"condition_number=0\.5 must be >= 1"):
        random_invertible(4, 0.5)
    with pytest.raises(ValueError, match="condition_number"):
        random_gauge(model, condition_number=0.0)
    wrong = GaugeTransform(
        torch.eye(3).expand(2, 4, 3, 3),
        torch.eye(3).expand(2, 4, 3, 3),
        torch.arange(4).expand(2, 4),
    )
    with pytest.raises(ValueError, match="gauge matrices have shapes"):
        apply_gauge(model, wrong)
    repeated = identity_gauge(model)
    repeated.permutation[0] = torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match="permutation"):
        apply_gauge(model, repeated)
    with pytest.raises(ValueError, match="equal shape"):
        match_heads(torch.zeros(2, 4, 8), torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="different shapes"):
        match_models(model, random_model(d_model=24, n_heads=4))
    with pytest.raises(ValueError, match="found no attention layer in Linear"):
        head_invariants(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- canonical gauge


def test_canonical_gauge_is_balanced_unique_and_keeps_the_function():
    model = random_model(seed=7)
    features = torch.randn(2, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    canonical = canonical_gauge(model)
    assert relative_difference(canonical(features), model(features)) < 1e-12
    qk_imbalance, ov_imbalance = gauge_imbalance(canonical)
    torch.testing.assert_close(qk_imbalance, torch.ones_like(qk_imbalance), rtol=1e-10, atol=0)
    torch.testing.assert_close(ov_imbalance, torch.ones_like(ov_imbalance), rtol=1e-10, atol=0)
    # Random weights are slightly off balance; a condition-number-100 gauge is far off.
    assert (gauge_imbalance(model)[0] > 1.0 + 1e-4).all()
    far = apply_gauge(model, random_gauge(model, 100.0, generator=9))
    assert all((imbalance > 2.0).all() for imbalance in gauge_imbalance(far))

    # Unique: any gauge-equivalent model lands on the same weights (heads in its order).
    for seed in range(3):
        transform = random_gauge(model, 100.0, permute_heads=True, generator=seed)
        from_moved = canonical_gauge(apply_gauge(model, transform))
        only_permuted = GaugeTransform(*vars(identity_gauge(model)).values())
        only_permuted.permutation = transform.permutation
        expected = apply_gauge(canonical, only_permuted)
        for (name, a), (_, b) in zip(
            from_moved.named_parameters(), expected.named_parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)
    # In place: the model itself is rewritten.
    same = canonical_gauge(model, inplace=True)
    assert same is model
    torch.testing.assert_close(
        model.blocks[1].attn.k_proj.weight, canonical.blocks[1].attn.k_proj.weight
    )


# ----------------------------------------------------------------------------- matching


@pytest.mark.parametrize("seed", range(5))
def test_matching_recovers_a_known_permutation_after_a_random_gauge(seed):
    model = random_model(seed=seed, d_model=32, n_heads=8)
    transform = random_gauge(model, 100.0, permute_heads=True, generator=50 + seed)
    matching = match_models(model, apply_gauge(model, transform))
    assert torch.equal(matching.permutation, transform.permutation)
    assert matching.pair_cost.max() < 1e-8  # identical invariant features, up to round-off
    # Against an unrelated model the assignment still works but costs far more.
    unrelated = match_heads(
        head_features(model), head_features(random_model(seed=99, d_model=32, n_heads=8))
    )
    assert unrelated.cost.min() > 1.0


# ----------------------------------------------------------------------------- the callback


def test_gauge_monitor_logs_invariants_without_perturbing_training(tmp_path):
    plain, _ = train(tmp_path / "plain", [], steps=12)
    monitor = GaugeInvariantMonitor(schedule=LogSchedule(points_per_decade=2, every=6))
    watched, _ = train(tmp_path / "watched", [monitor], steps=12)
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), watched.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name  # bit-identical: no RNG, gradient or flag is touched

    emergence = tmp_path / "watched" / "run" / "emergence"
    assert [p.name for p in emergence.iterdir()] == ["gauge_invariants.csv"]  # no probe file
    rows = read_rows(emergence / "gauge_invariants.csv")
    steps = sorted({int(row["step"]) for row in rows})
    assert steps == [0, 1, 3, 6, 10, 12]
    assert len(rows) == len(steps) * 2 * 4  # every step, layer and head
    final = [row for row in rows if int(row["step"]) == 12]
    invariants = head_invariants(watched)
    for row in final:
        layer, head = int(row["layer"]), int(row["head"])
        for name, value in invariants.scalars().items():
            assert float(row[name]) == pytest.approx(float(value[layer, head]), rel=1e-12)
        assert float(row["qk_sv3"]) == pytest.approx(
            float(invariants.qk_singular_values[layer, head, 3]), rel=1e-12
        )
        assert float(row["qk_imbalance"]) >= 1.0


# ----------------------------------------------------------------------------- LLC


def test_llc_in_the_canonical_gauge_does_not_depend_on_the_starting_gauge(probe):
    model = random_model(seed=11).float()
    batches = [{k: v.float() if v.is_floating_point() else v for k, v in probe.items()}]

    def loss_fn(outputs, batch):
        return F.mse_loss(outputs, batch["target"])

    settings = dict(num_chains=2, num_draws=20, num_burnin=5, step_size=1e-4, generator=0)
    restriction = attention_head_restriction(model, 1, 2)
    moved = apply_gauge(model, random_gauge(model, 100.0, generator=12))
    canonical = estimate_llc_canonical(model, loss_fn, batches, restrict=restriction, **settings)
    canonical_moved = estimate_llc_canonical(
        moved, loss_fn, batches, restrict=restriction, **settings
    )
    # The two canonical points agree to float32 round-off (~1e-5 relative), so do the chains.
    assert canonical_moved.llc_mean == pytest.approx(canonical.llc_mean, rel=1e-3, abs=1e-3)
    # In their own gauges the same two functions give different estimates (same seed).
    original = estimate_llc(model, loss_fn, batches, restrict=restriction, **settings)
    original_moved = estimate_llc(moved, loss_fn, batches, restrict=restriction, **settings)
    assert abs(original_moved.llc_mean - original.llc_mean) > 0.1
