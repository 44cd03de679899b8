"""Tests for lit_emergence.functional: collision score (overall and by height), neighbours,
attention-distance statistics (pooled, per query, correlation length).

The references are deliberately naive (Python loops over scenes, layers, heads and pairs,
scipy for Pearson) so that they share no code or trick with the vectorised implementation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from scipy.spatial.distance import cdist

import lit_emergence.functional._pairs as pairs_module
from lit_emergence.functional import (
    HEAD_CLASSES,
    attention_distance_correlation,
    band_collision_score,
    classify_heads,
    collision_score,
    connected_correlation,
    correlation_length,
    default_r_grid,
    head_class_names,
    height_bands,
    impact_queries,
    mean_attention_distance,
    neighbour_mask,
    pairwise_distances,
    query_correlation,
)
from lit_emergence.functional.attention_distance import (
    attention_distance_statistics,
    connected_correlation_from_statistics,
    correlation_from_statistics,
)
from lit_emergence.functional.collision import (
    collision_score_statistics,
    grouped_collision_score_statistics,
)
from lit_emergence.functional.query_distance import (
    QUERY_OBSERVABLES,
    query_distance_from_statistics,
    query_distance_statistics,
)
from lit_emergence.model import ParticleTransformer
from lit_emergence.physics import SimulationConfig, initial_state, simulate

# Float64 sums of at most a few thousand O(1) terms, added in a different order than the loop
# reference: round-off is ~1e-15 relative, so 1e-12 is tight yet far from flaky.
EXACT = dict(rtol=1e-12, atol=1e-12)


# --- random inputs ------------------------------------------------------------------------------


def random_attention(
    generator: torch.Generator,
    shape: tuple[int, int, int, int],
    *,
    mask_self: bool = True,
    valid: torch.Tensor | None = None,
    sharpness: float = 3.0,
) -> torch.Tensor:
    """Softmax attention (B, L, H, N, N) with rows summing to 1 over the visible keys.

    ``sharpness`` scales random logits, so heads are far from uniform (a uniform head would make
    correlations degenerate).
    """
    B, L, H, N = shape
    logits = sharpness * torch.randn(B, L, H, N, N, generator=generator, dtype=torch.float64)
    allowed = torch.ones(B, 1, 1, N, N, dtype=torch.bool)
    if mask_self:
        allowed = allowed & ~torch.eye(N, dtype=torch.bool)
    if valid is not None:
        allowed = allowed & valid[:, None, None, None, :]
    return logits.masked_fill(~allowed, -math.inf).softmax(dim=-1)


def random_scene(generator: torch.Generator, batch: int, num: int) -> tuple[torch.Tensor, ...]:
    """Positions (B, N, 2) in a 6 x 6 box and radii (B, N) in [0.4, 0.8]: many near pairs."""
    positions = 6.0 * torch.rand(batch, num, 2, generator=generator, dtype=torch.float64)
    radii = 0.4 + 0.4 * torch.rand(batch, num, generator=generator, dtype=torch.float64)
    return positions, radii


# --- loop references ----------------------------------------------------------------------------


def loop_collision_score(attention, pair_mask, query_mask=None, valid=None) -> np.ndarray:
    """The score by its definition, one query at a time."""
    A = attention.double().numpy()
    B, L, H, N, _ = A.shape
    real = np.ones((B, N), bool) if valid is None else valid.numpy()
    result = np.full((L, H), np.nan)
    for layer in range(L):
        for h in range(H):
            masses = []
            for b in range(B):
                for i in range(N):
                    if not real[b, i] or (query_mask is not None and not query_mask[b, i]):
                        continue
                    partners = [
                        j for j in range(N) if j != i and real[b, j] and bool(pair_mask[b, i, j])
                    ]
                    if partners:
                        masses.append(sum(A[b, layer, h, i, j] for j in partners))
            if masses:
                result[layer, h] = sum(masses) / len(masses)
    return result


def loop_pairs(attention, positions, valid=None):
    """Per head, the lists of attention values and distances over off-diagonal real pairs."""
    A = attention.double().numpy()
    x = positions.double().numpy()
    B, L, H, N, _ = A.shape
    real = np.ones((B, N), bool) if valid is None else valid.numpy()
    values = [[[] for _ in range(H)] for _ in range(L)]
    distances = []
    for b in range(B):
        for i in range(N):
            for j in range(N):
                if i == j or not (real[b, i] and real[b, j]):
                    continue
                distances.append(math.hypot(*(x[b, i] - x[b, j])))
                for layer in range(L):
                    for h in range(H):
                        values[layer][h].append(A[b, layer, h, i, j])
    return np.array(values), np.array(distances)  # (L, H, P), (P,)


def loop_connected_correlation(attention, positions, r_grid, valid=None) -> np.ndarray:
    """G(r) = E[A 1{d <= r}] - E[A] E[1{d <= r}] with explicit loops over heads, r and pairs."""
    values, distances = loop_pairs(attention, positions, valid)
    L, H, P = values.shape
    result = np.zeros((L, H, len(r_grid)))
    for layer in range(L):
        for h in range(H):
            mean_a = sum(values[layer, h]) / P
            for k, r in enumerate(r_grid.tolist()):
                inside = [p for p in range(P) if distances[p] <= r]
                joint = sum(values[layer, h, p] for p in inside) / P
                result[layer, h, k] = joint - mean_a * len(inside) / P
    return result


# --- distances and neighbours -------------------------------------------------------------------


def test_pairwise_distances_match_scipy_and_pad_with_inf() -> None:
    g = torch.Generator().manual_seed(0)
    positions, _ = random_scene(g, 2, 5)
    distances = pairwise_distances(positions)
    for b in range(2):
        expected = cdist(positions[b].numpy(), positions[b].numpy())
        np.testing.assert_allclose(distances[b].numpy(), expected, **EXACT)
    valid = torch.tensor([[True, True, False, True, True], [True] * 5])
    padded = pairwise_distances(positions, valid)
    assert torch.isinf(padded[0, 2]).all() and torch.isinf(padded[0, :, 2]).all()
    assert torch.equal(padded[1], distances[1])


def test_neighbour_mask_definition() -> None:
    # Two discs of radius 1 at distance 2.15: neighbours with 10 % tolerance only from 7.5 %.
    positions = torch.tensor([[[0.0, 0.0], [2.15, 0.0], [10.0, 0.0]]])
    radii = torch.ones(1, 3)
    assert neighbour_mask(positions, radii, tolerance=0.1)[0, 0, 1]
    assert not neighbour_mask(positions, radii, tolerance=0.05)[0, 0, 1]
    mask = neighbour_mask(positions, radii)
    assert torch.equal(mask, mask.transpose(1, 2))
    assert not mask[0].diagonal().any()  # a particle is never its own neighbour
    assert not mask[0, 2].any()
    # a padded particle is nobody's neighbour, even on top of a real one
    positions[0, 2] = positions[0, 0]
    valid = torch.tensor([[True, True, False]])
    assert not neighbour_mask(positions, radii, valid=valid)[0, :, 2].any()
    with pytest.raises(ValueError, match="tolerance"):
        neighbour_mask(positions, radii, tolerance=-0.1)
    with pytest.raises(ValueError, match="radii"):
        neighbour_mask(positions, radii[:, :2])


# --- collision score vs the loop reference -------------------------------------------------------


@pytest.mark.parametrize("restrict_queries", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("mask_self", [True, False])
def test_collision_score_matches_loop(restrict_queries: bool, padded: bool, mask_self) -> None:
    g = torch.Generator().manual_seed(1)
    B, L, H, N = 3, 2, 3, 7
    valid = torch.rand(B, N, generator=g) < 0.8 if padded else None
    attention = random_attention(g, (B, L, H, N), mask_self=mask_self, valid=valid)
    positions, radii = random_scene(g, B, N)
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    query_mask = torch.rand(B, N, generator=g) < 0.6 if restrict_queries else None
    score = collision_score(attention, pair_mask, query_mask, valid)
    expected = loop_collision_score(attention, pair_mask, query_mask, valid)
    assert score.shape == (L, H) and score.dtype == torch.float64
    np.testing.assert_allclose(score.numpy(), expected, **EXACT)
    # a random (asymmetric) pair mask with a True diagonal: the diagonal must be ignored
    random_pairs = torch.rand(B, N, N, generator=g) < 0.3
    random_pairs[:, range(N), range(N)] = True
    np.testing.assert_allclose(
        collision_score(attention, random_pairs, query_mask, valid).numpy(),
        loop_collision_score(attention, random_pairs, query_mask, valid),
        **EXACT,
    )


def test_collision_statistics_shapes_count_and_nan_without_queries() -> None:
    g = torch.Generator().manual_seed(2)
    attention = random_attention(g, (2, 2, 4, 5))
    pair_mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    pair_mask[0, 1, 3] = pair_mask[1, 4, 0] = pair_mask[1, 4, 2] = True
    sum_mass, count = collision_score_statistics(attention, pair_mask)
    assert sum_mass.shape == count.shape == (2, 4)
    assert sum_mass.dtype == count.dtype == torch.float64
    assert (count == 2).all()  # queries (0, 1) and (1, 4)
    expected = attention[0, :, :, 1, 3] + attention[1, :, :, 4, 0] + attention[1, :, :, 4, 2]
    torch.testing.assert_close(sum_mass, expected, **EXACT)
    # no query with a partner: the mean over an empty set is NaN, not 0
    assert collision_score(attention, torch.zeros_like(pair_mask)).isnan().all()


def test_float32_attention_is_accumulated_in_float64() -> None:
    g = torch.Generator().manual_seed(3)
    attention = random_attention(g, (4, 1, 2, 9))
    positions, radii = random_scene(g, 4, 9)
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    score64 = collision_score(attention, pair_mask)
    score32 = collision_score(attention.float(), pair_mask)
    assert score32.dtype == torch.float64
    # only the float32 rounding of the inputs differs (~6e-8 relative per entry)
    torch.testing.assert_close(score32, score64, rtol=1e-6, atol=1e-7)


# --- hand-built heads ---------------------------------------------------------------------------


def hand_built_heads(pair_mask: torch.Tensor) -> torch.Tensor:
    """Attention (B, 1, 5, N, N) of five known heads on a given partner set.

    0: exactly on the partners (uniform over them; uniform over the others if none);
    1: uniform over the N - 1 other particles (a uniform head with mask_self);
    2: uniform over all N particles, self included (a uniform head without mask_self);
    3: all on self;
    4: 0.7 on the partners as in head 0, 0.3 on self.
    """
    B, N, _ = pair_mask.shape
    eye = torch.eye(N, dtype=torch.float64)
    others = (1 - eye).expand(B, N, N)
    partners = pair_mask.double()
    has_partner = partners.sum(-1, keepdim=True) > 0
    on_partners = torch.where(has_partner, partners, others)
    on_partners = on_partners / on_partners.sum(-1, keepdim=True)
    uniform_others = others / (N - 1)
    uniform_all = torch.full((B, N, N), 1.0 / N, dtype=torch.float64)
    on_self = eye.expand(B, N, N)
    mixed = 0.7 * on_partners + 0.3 * on_self
    heads = [on_partners, uniform_others, uniform_all, on_self, mixed]
    return torch.stack(heads, dim=1)[:, None]  # (B, 1, 5, N, N)


def test_hand_built_heads_scores_and_classes() -> None:
    g = torch.Generator().manual_seed(4)
    B, N = 4, 8
    upper = torch.rand(B, N, N, generator=g) < 0.25
    pair_mask = torch.triu(upper, diagonal=1)
    pair_mask = pair_mask | pair_mask.transpose(1, 2)  # symmetric contact set, no self-pairs
    pair_mask[0, 5, :] = pair_mask[0, :, 5] = False  # a particle without partners
    attention = hand_built_heads(pair_mask)
    torch.testing.assert_close(attention.sum(-1), torch.ones(B, 1, 5, N, dtype=torch.float64))

    score = collision_score(attention, pair_mask)[0]
    partners_per_query = pair_mask.sum(-1)[pair_mask.any(-1)].double()  # over counted queries
    assert score[0] == pytest.approx(1.0, abs=1e-12)
    assert score[1] == pytest.approx((partners_per_query / (N - 1)).mean().item(), abs=1e-12)
    assert score[2] == pytest.approx((partners_per_query / N).mean().item(), abs=1e-12)
    assert score[3] == 0.0
    assert score[4] == pytest.approx(0.7, abs=1e-12)

    codes = classify_heads(score)
    assert head_class_names(codes) == ["true", "none", "none", "none", "partial"]
    assert [HEAD_CLASSES[c] for c in codes.tolist()] == head_class_names(codes)


def test_classify_heads_thresholds() -> None:
    scores = torch.tensor([[0.95, 0.9, 0.89, 0.5], [0.49, 0.0, 1.0, float("nan")]])
    assert classify_heads(scores).tolist() == [[2, 2, 1, 1], [0, 0, 2, 0]]
    assert classify_heads(scores, true_threshold=0.95, partial_threshold=0.9).tolist() == [
        [2, 1, 0, 0],
        [0, 0, 2, 0],
    ]
    assert head_class_names(classify_heads(torch.tensor(0.7))) == "partial"
    assert classify_heads(np.array([0.2, 0.92])).tolist() == [0, 2]  # array-likes work too
    for true_threshold, partial_threshold in [(0.5, 0.9), (1.1, 0.5), (0.9, 0.0)]:
        with pytest.raises(ValueError, match="partial_threshold"):
            classify_heads(scores, true_threshold, partial_threshold)


# --- attention-distance statistics vs scipy and loops -------------------------------------------


@pytest.mark.parametrize("padded", [False, True])
def test_pearson_matches_scipy_per_head(padded: bool) -> None:
    g = torch.Generator().manual_seed(5)
    B, L, H, N = 3, 2, 3, 7
    valid = torch.rand(B, N, generator=g) < 0.8 if padded else None
    attention = random_attention(g, (B, L, H, N), valid=valid)
    positions, _ = random_scene(g, B, N)
    correlation = attention_distance_correlation(attention, positions, valid)
    values, distances = loop_pairs(attention, positions, valid)
    assert correlation.shape == (L, H) and correlation.dtype == torch.float64
    for layer in range(L):
        for h in range(H):
            expected = scipy_stats.pearsonr(values[layer, h], distances).statistic
            # raw-moment formula: cancellation costs ~ (mean^2 / variance) ulps, < 1e-13 here
            assert correlation[layer, h].item() == pytest.approx(expected, abs=1e-10)


def test_pearson_sign_for_local_head_and_nan_for_uniform_head() -> None:
    g = torch.Generator().manual_seed(6)
    B, N = 2, 9
    positions, _ = random_scene(g, B, N)
    distances = pairwise_distances(positions)
    eye = torch.eye(N, dtype=torch.bool)
    local = (-2.0 * distances).masked_fill(eye, -math.inf).softmax(-1)  # decays with distance
    uniform = (~eye).double().expand(B, N, N) / (N - 1)
    attention = torch.stack([local, uniform], dim=1)[:, None]  # (B, 1, 2, N, N)
    correlation = attention_distance_correlation(attention, positions)[0]
    assert correlation[0] < -0.3
    assert correlation[1].isnan()  # constant attention has no correlation (scipy: NaN too)


@pytest.mark.parametrize("padded", [False, True])
def test_connected_correlation_matches_loop(padded: bool) -> None:
    g = torch.Generator().manual_seed(7)
    B, L, H, N = 3, 2, 2, 6
    valid = torch.rand(B, N, generator=g) < 0.8 if padded else None
    attention = random_attention(g, (B, L, H, N), valid=valid)
    positions, _ = random_scene(g, B, N)
    r_grid = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.5, 20.0], dtype=torch.float64)
    G = connected_correlation(attention, positions, r_grid, valid)
    assert G.shape == (L, H, 6) and G.dtype == torch.float64
    expected = loop_connected_correlation(attention, positions, r_grid, valid)
    np.testing.assert_allclose(G.numpy(), expected, **EXACT)
    assert G[..., -1].abs().max() < 1e-15  # beyond every distance the indicator is 1: G = 0


def test_connected_correlation_counts_pairs_at_exactly_r() -> None:
    # integer coordinates: the distances 3, 4, 5 are exact in float64, so d <= r is testable
    positions = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]]], dtype=torch.float64)
    attention = hand_built_heads(torch.zeros(1, 3, 3, dtype=torch.bool))[:, :, :1]  # uniform
    attention = attention.clone()
    attention[0, 0, 0] = torch.tensor(
        [[0, 0.9, 0.1], [0.2, 0, 0.8], [0.5, 0.5, 0]], dtype=torch.float64
    )
    r_grid = torch.tensor([2.999, 3.0, 4.0, 5.0])
    stats = attention_distance_statistics(attention, positions, r_grid=r_grid)
    # six ordered pairs: d(0,1) = 3, d(1,2) = 4, d(0,2) = 5
    assert stats["sum_ind"].tolist() == [0.0, 2.0, 4.0, 6.0]
    expected_inside = [0.0, 0.9 + 0.2, 0.9 + 0.2 + 0.8 + 0.5, 3.0]
    torch.testing.assert_close(stats["sum_a_ind"][0, 0], torch.tensor(expected_inside).double())
    G = connected_correlation_from_statistics(stats)[0, 0]
    mean_a = 3.0 / 6.0
    for k in range(4):
        expected = expected_inside[k] / 6 - mean_a * stats["sum_ind"][k].item() / 6
        assert G[k].item() == pytest.approx(expected, abs=1e-15)


def test_statistics_add_up_over_batches_and_chunks(monkeypatch) -> None:
    g = torch.Generator().manual_seed(8)
    B, L, H, N = 5, 2, 3, 6
    attention = random_attention(g, (B, L, H, N))
    positions, radii = random_scene(g, B, N)
    r_grid = default_r_grid(0.6, num=7)
    whole = attention_distance_statistics(attention, positions, r_grid=r_grid)
    parts = [
        attention_distance_statistics(attention[s], positions[s], r_grid=r_grid)
        for s in (slice(0, 2), slice(2, 5))
    ]
    assert set(whole) == {
        "n",
        "sum_a",
        "sum_d",
        "sum_aa",
        "sum_dd",
        "sum_ad",
        "sum_ind",
        "sum_a_ind",
    }
    for key, value in whole.items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(parts[0][key] + parts[1][key], value, **EXACT)
    assert whole["n"].shape == (L, H) and whole["sum_ind"].shape == (7,)
    assert (whole["n"] == B * N * (N - 1)).all()
    # one scene per chunk: the same sums (the chunk loop only bounds memory)
    pair_mask = neighbour_mask(positions, radii)
    score = collision_score(attention, pair_mask)
    monkeypatch.setattr(pairs_module, "MAX_CHUNK_ELEMENTS", 1)
    for key, value in attention_distance_statistics(attention, positions, r_grid=r_grid).items():
        torch.testing.assert_close(value, whole[key], **EXACT)
    torch.testing.assert_close(collision_score(attention, pair_mask), score, **EXACT)
    assert torch.equal(correlation_from_statistics(whole), correlation_from_statistics(whole))


def test_default_r_grid() -> None:
    grid = default_r_grid(1.0)
    assert grid.dtype == torch.float64 and grid.shape == (32,)
    assert grid[0].item() == pytest.approx(1.0) and grid[-1].item() == pytest.approx(12.0)
    clipped = default_r_grid(1.0, max_distance=8.0, num=5)
    torch.testing.assert_close(clipped, torch.tensor([1.0, 2.75, 4.5, 6.25, 8.0]).double())
    geometric = default_r_grid(0.5, num=4, start=1.0, stop=8.0, spacing="geometric")
    torch.testing.assert_close(geometric, torch.tensor([1.0, 2.0, 4.0, 8.0]).double())
    assert default_r_grid(1.0, num=1).tolist() == [1.0]
    for kwargs in [dict(radius=0.0), dict(radius=1.0, num=0), dict(radius=1.0, start=7.0)]:
        with pytest.raises(ValueError):
            default_r_grid(**kwargs)
    with pytest.raises(ValueError, match="spacing"):
        default_r_grid(1.0, spacing="log")
    with pytest.raises(ValueError, match="max_distance"):
        default_r_grid(1.0, max_distance=0.5)


def test_bad_inputs_raise_one_line_errors() -> None:
    g = torch.Generator().manual_seed(9)
    attention = random_attention(g, (2, 1, 2, 4))
    positions, _ = random_scene(g, 2, 4)
    pair_mask = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(B, L, H, N, N\)"):
        collision_score(attention[:, 0], pair_mask)
    with pytest.raises(ValueError, match="pair_mask"):
        collision_score(attention, pair_mask.float())
    with pytest.raises(ValueError, match="valid"):
        collision_score(attention, pair_mask, valid=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="positions"):
        attention_distance_correlation(attention, positions[:, :3])
    with pytest.raises(ValueError, match="r_grid"):
        connected_correlation(attention, positions, torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="r_grid"):
        connected_correlation_from_statistics(attention_distance_statistics(attention, positions))


# --- padding ------------------------------------------------------------------------------------


def test_padding_does_not_change_results() -> None:
    g = torch.Generator().manual_seed(10)
    B, L, H, N, P = 3, 2, 2, 6, 3  # P padded slots appended to every scene
    attention = random_attention(g, (B, L, H, N))
    positions, radii = random_scene(g, B, N)
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    query_mask = torch.rand(B, N, generator=g) < 0.7
    r_grid = default_r_grid(0.6, num=9)

    # padded slots: NaN attention in their rows and columns, positions on top of real
    # particles (so a careless distance test would call them neighbours)
    padded_attention = torch.full((B, L, H, N + P, N + P), math.nan, dtype=torch.float64)
    padded_attention[..., :N, :N] = attention
    padded_positions = torch.cat([positions, positions[:, :P]], dim=1)
    padded_radii = torch.cat([radii, radii[:, :P]], dim=1)
    valid = torch.zeros(B, N + P, dtype=torch.bool)
    valid[:, :N] = True
    padded_pairs = neighbour_mask(padded_positions, padded_radii, tolerance=0.3, valid=valid)
    assert torch.equal(padded_pairs[:, :N, :N], pair_mask) and not padded_pairs[:, N:].any()
    padded_queries = torch.cat([query_mask, torch.ones(B, P, dtype=torch.bool)], dim=1)

    all_pairs = torch.ones(B, N + P, N + P, dtype=torch.bool)  # padding must be dropped anyway
    torch.testing.assert_close(
        collision_score(padded_attention, all_pairs, padded_queries, valid),
        collision_score(attention, torch.ones(B, N, N, dtype=torch.bool), query_mask),
        **EXACT,
    )
    torch.testing.assert_close(
        collision_score(padded_attention, padded_pairs, valid=valid),
        collision_score(attention, pair_mask),
        **EXACT,
    )
    torch.testing.assert_close(
        attention_distance_correlation(padded_attention, padded_positions, valid),
        attention_distance_correlation(attention, positions),
        **EXACT,
    )
    torch.testing.assert_close(
        connected_correlation(padded_attention, padded_positions, r_grid, valid),
        connected_correlation(attention, positions, r_grid),
        **EXACT,
    )


def test_padding_invariance_through_the_model() -> None:
    torch.manual_seed(11)
    model = ParticleTransformer(4, 2, d_model=16, n_layers=2, n_heads=4).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)  # sharp, non-uniform attention
    g = torch.Generator().manual_seed(11)
    B, N, P = 3, 7, 2
    features = torch.randn(B, N, 4, generator=g)
    positions, radii = random_scene(g, B, N)
    padded_features = torch.cat([features, 1e3 * torch.randn(B, P, 4, generator=g)], dim=1)
    padded_positions = torch.cat([positions, positions[:, :P]], dim=1)
    padded_radii = torch.cat([radii, radii[:, :P]], dim=1)
    valid = torch.ones(B, N + P, dtype=torch.bool)
    valid[:, N:] = False
    with torch.no_grad():
        _, attention = model(features, return_attention=True)
        _, padded_attention = model(padded_features, valid, return_attention=True)
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    padded_pairs = neighbour_mask(padded_positions, padded_radii, tolerance=0.3, valid=valid)
    # the model's float32 softmax over a longer masked row may round differently: ~1e-7
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        collision_score(padded_attention, padded_pairs, valid=valid),
        collision_score(attention, pair_mask),
        **close,
    )
    torch.testing.assert_close(
        attention_distance_correlation(padded_attention, padded_positions, valid),
        attention_distance_correlation(attention, positions),
        **close,
    )


# --- impact queries -----------------------------------------------------------------------------


def test_impact_queries_definition() -> None:
    g_acc, dt = 2.0, 0.5  # free fall changes v by (0, -1) per frame: the default scale is 1
    velocity_change = torch.tensor(
        [[[0.0, -1.0], [0.0, -1.4], [0.0, -1.6], [0.0, 0.0], [0.6, -1.0], [0.0, 0.0]]]
    )
    contacts = torch.ones(1, 6, 6, dtype=torch.bool)
    contacts[0, 5, :] = False  # the last particle departs from free fall but touches nobody
    contacts[0, 5, 5] = True  # ...and touching itself does not count
    expected = [False, False, True, True, True, False]
    assert impact_queries(velocity_change, dt, g_acc, contacts)[0].tolist() == expected
    # threshold * scale is what matters: scale 2 with threshold 0.5 -> departures above 1
    strict = impact_queries(velocity_change, dt, g_acc, contacts, threshold=0.5, scale=2.0)
    assert strict[0].tolist() == [False, False, False, False, False, False]
    valid = torch.tensor([[True, True, True, False, True, True]])
    assert impact_queries(velocity_change, dt, g_acc, contacts, valid=valid)[0, 3].item() is False
    with pytest.raises(ValueError, match="scale"):
        impact_queries(velocity_change, dt, 0.0, contacts)
    with pytest.raises(ValueError, match="frame_interval"):
        impact_queries(velocity_change, 0.0, g_acc, contacts)


# --- real simulator data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated():
    """Coarse frames as the data module records them, and every integrator step of the same run.

    The fine run (``substeps = 1``) replays the coarse run step by step from the same start:
    recording a frame does not touch the integrator state, so it is the same trajectory.
    """
    config = SimulationConfig(num_particles=10, num_frames=31, init_speed=3.0)
    start = initial_state(
        config, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    coarse = simulate(config, 4, initial=start)
    substeps = config.substeps
    fine_config = dataclasses.replace(
        config, substeps=1, num_frames=(config.num_frames - 1) * substeps + 1
    )
    fine = simulate(fine_config, 4, initial=start)
    return config, coarse, fine


def frames_neighbours(positions: torch.Tensor, radii: torch.Tensor, tolerance: float):
    """neighbour_mask of every frame of (B, T, N, 2) positions: (B, T, N, N)."""
    B, T, N, _ = positions.shape
    radii = radii[:, None].expand(B, T, N).reshape(B * T, N)
    return neighbour_mask(positions.reshape(B * T, N, 2), radii, tolerance).view(B, T, N, N)


def test_contacts_are_the_union_of_zero_tolerance_neighbours_over_the_substeps(simulated) -> None:
    config, coarse, fine = simulated
    S = config.substeps
    assert torch.equal(fine.positions[:, ::S], coarse.positions)  # same run, bit for bit
    assert coarse.contacts.sum() > 50  # enough collisions for the test to mean something
    touching = frames_neighbours(fine.positions, coarse.radii, tolerance=0.0)
    for t in range(config.num_frames - 1):
        # the interval t -> t+1 includes both recorded frames: steps t*S .. (t+1)*S
        assert torch.equal(touching[:, t * S : (t + 1) * S + 1].any(dim=1), coarse.contacts[:, t])


def test_pairs_touching_at_a_frame_are_contacts_and_neighbours(simulated) -> None:
    _, coarse, _ = simulated
    touching = frames_neighbours(coarse.positions, coarse.radii, tolerance=0.0)  # (B, T, N, N)
    near = frames_neighbours(coarse.positions, coarse.radii, tolerance=0.1)
    assert touching.any()
    # a pair touching at frame t touched in both intervals that share that frame
    assert not (touching[:, :-1] & ~coarse.contacts).any()
    assert not (touching[:, 1:] & ~coarse.contacts).any()
    assert not (touching & ~near).any()
    # but a contact during the interval need not be a neighbour at its first frame: discs that
    # meet later in the interval are farther apart at t (about 11 % of contacts here)
    missed = (coarse.contacts & ~near[:, :-1]).sum() / coarse.contacts.sum()
    assert 0.0 < missed < 0.3


def test_scores_on_simulated_contacts(simulated) -> None:
    config, coarse, fine = simulated
    B, T, N, _ = coarse.positions.shape
    positions = coarse.positions[:, :-1].reshape(-1, N, 2)  # every input frame as a scene
    contacts = coarse.contacts.reshape(-1, N, N)
    radii = coarse.radii.repeat_interleave(T - 1, dim=0)
    attention = hand_built_heads(contacts)  # heads 0..4 as in the hand-built test
    strict = collision_score(attention, contacts)[0]
    assert strict[0] == pytest.approx(1.0) and strict[3] == 0.0
    assert strict[4] == pytest.approx(0.7)
    # the contact-oracle head scores high but not 1 on the radius-based default score
    score = collision_score(attention, neighbour_mask(positions, radii))[0]
    assert 0.5 < score[0] < 1.0

    # impact queries: discs in free flight during the whole interval (no pair and no wall
    # contact at any step) follow (0, -g dt) exactly, so they never count even if every pair
    # were called a contact; discs in contact mostly do
    velocity_change = (coarse.velocities[:, 1:] - coarse.velocities[:, :-1]).reshape(-1, N, 2)
    everyone = torch.ones(B * (T - 1), N, N, dtype=torch.bool)
    impacts = impact_queries(velocity_change, config.frame_interval, config.gravity, everyone)
    S = config.substeps
    x, r = fine.positions, coarse.radii[:, None, :, None]  # (B, T*S, N, 2), (B, 1, N, 1)
    box = torch.tensor([config.box_width, config.box_height], dtype=x.dtype)
    off_walls = ((x > r) & (x < box - r)).all(dim=-1)  # (B, fine frames, N)
    free = torch.stack(
        [off_walls[:, t * S : (t + 1) * S + 1].all(dim=1) for t in range(T - 1)], dim=1
    ).reshape(-1, N) & ~contacts.any(dim=-1)
    assert free.sum() > 100
    assert not (impacts & free).any()
    colliding = impact_queries(velocity_change, config.frame_interval, config.gravity, contacts)
    assert colliding.sum() > 0.5 * contacts.any(dim=-1).sum()
    impact_score = collision_score(attention, contacts, colliding)[0]
    assert impact_score[0] == pytest.approx(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(12)
    B, L, H, N = 4, 2, 3, 9
    valid = torch.rand(B, N, generator=g) < 0.8
    attention = random_attention(g, (B, L, H, N), valid=valid).float()
    positions, radii = random_scene(g, B, N)
    r_grid = default_r_grid(0.6, num=9)
    cpu = (attention, positions, radii, valid, r_grid)
    cuda = tuple(x.cuda() for x in cpu)

    def everything(attention, positions, radii, valid, r_grid):
        pairs = neighbour_mask(positions, radii, valid=valid)
        connected = connected_correlation(attention, positions, r_grid, valid)
        return [
            collision_score(attention, pairs, valid=valid),
            attention_distance_correlation(attention, positions, valid),
            connected,
            band_collision_score(attention, pairs, positions, 6.0, 3, valid=valid),
            correlation_length(connected, r_grid, 2),
            *query_distance_statistics(attention, positions, valid).values(),
        ]

    # float64 sums on both devices; CUDA may add in another order (atomics in index_add_)
    for on_cpu, on_cuda in zip(everything(*cpu), everything(*cuda), strict=True):
        assert on_cuda.device.type == "cuda"
        torch.testing.assert_close(on_cuda.cpu(), on_cpu, **EXACT, equal_nan=True)


# --- per-query distance observables vs scipy, one query at a time --------------------------------


def loop_query_observables(attention, positions, valid=None) -> dict[str, np.ndarray]:
    """Mean attention distance and per-query Pearson / Spearman, averaged over queries.

    One query at a time with scipy.stats; a correlation that scipy cannot define (fewer than
    two keys, constant input) is left out of the average, as the implementation does.
    """
    A = attention.double().numpy()
    x = positions.double().numpy()
    B, L, H, N, _ = A.shape
    real = np.ones((B, N), bool) if valid is None else valid.numpy()
    result = {name: np.full((L, H), np.nan) for name in ("mean_distance", "pearson", "spearman")}
    for layer in range(L):
        for h in range(H):
            values = {name: [] for name in result}
            for b in range(B):
                for i in range(N):
                    keys = [j for j in range(N) if j != i and real[b, i] and real[b, j]]
                    if not keys:
                        continue
                    a = np.array([A[b, layer, h, i, j] for j in keys])
                    d = np.array([math.hypot(*(x[b, i] - x[b, j])) for j in keys])
                    if a.sum() > 0:
                        values["mean_distance"].append(float(a @ d) / a.sum())
                    if len(keys) >= 2 and np.ptp(a) > 0 and np.ptp(d) > 0:
                        values["pearson"].append(scipy_stats.pearsonr(a, d).statistic)
                        values["spearman"].append(scipy_stats.spearmanr(a, d).statistic)
            for name, found in values.items():
                if found:
                    result[name][layer, h] = np.mean(found)
    return result


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("mask_self", [True, False])
def test_query_observables_match_scipy_per_query(padded: bool, mask_self: bool) -> None:
    g = torch.Generator().manual_seed(13)
    B, L, H, N = 3, 2, 3, 7
    valid = torch.rand(B, N, generator=g) < 0.8 if padded else None
    attention = random_attention(g, (B, L, H, N), mask_self=mask_self, valid=valid)
    positions, _ = random_scene(g, B, N)
    stats = query_distance_statistics(attention, positions, valid)
    found = query_distance_from_statistics(stats)
    expected = loop_query_observables(attention, positions, valid)
    for name in QUERY_OBSERVABLES:
        assert found[name].shape == (L, H) and found[name].dtype == torch.float64
        # centred float64 moments of <= 6 O(1) terms on both sides: ~1e-15 apart
        np.testing.assert_allclose(found[name].numpy(), expected[name], **EXACT, err_msg=name)
    np.testing.assert_allclose(
        mean_attention_distance(attention, positions, valid).numpy(), expected["mean_distance"]
    )
    for method in ("pearson", "spearman"):
        np.testing.assert_allclose(
            query_correlation(attention, positions, valid, method).numpy(), expected[method]
        )
    if not padded:  # every real query with keys and random attention counts
        assert (stats["count_pearson"] == B * N).all()


def test_query_spearman_ties_take_average_ranks_as_scipy() -> None:
    # a 3 x 3 integer lattice: many exactly equal distances (1, sqrt 2, 2, ...); attention from
    # integer logits: exactly equal weights where the logits are equal
    grid = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"), -1)
    positions = grid.reshape(1, 9, 2).double()
    g = torch.Generator().manual_seed(14)
    logits = torch.randint(0, 3, (1, 1, 2, 9, 9), generator=g).double()
    attention = logits.masked_fill(torch.eye(9, dtype=torch.bool), -math.inf).softmax(-1)
    expected = loop_query_observables(attention, positions)
    found = query_correlation(attention, positions, method="spearman")
    np.testing.assert_allclose(found.numpy(), expected["spearman"], **EXACT)


def test_query_observables_of_known_heads() -> None:
    g = torch.Generator().manual_seed(15)
    B, N = 2, 8
    positions, _ = random_scene(g, B, N)
    distances = pairwise_distances(positions)
    eye = torch.eye(N, dtype=torch.bool)
    near = (-3.0 * distances).masked_fill(eye, -math.inf).softmax(-1)  # falls with distance
    far = (3.0 * distances).masked_fill(eye, -math.inf).softmax(-1)  # rises with distance
    uniform = (~eye).double().expand(B, N, N) / (N - 1)
    attention = torch.stack([near, far, uniform], dim=1)[:, None]  # (B, 1, 3, N, N)
    spearman = query_correlation(attention, positions, method="spearman")[0]
    # a strictly monotone function of distance ranks the keys exactly as distance does
    assert spearman[0].item() == pytest.approx(-1.0, abs=1e-12)
    assert spearman[1].item() == pytest.approx(1.0, abs=1e-12)
    assert spearman[2].isnan()  # constant attention: no correlation (scipy: NaN too)
    assert query_correlation(attention, positions)[0, 2].isnan()
    # the uniform head's mean attention distance is the plain mean distance to the others
    mean = mean_attention_distance(attention, positions)[0]
    plain = (distances.sum(-1) / (N - 1)).mean()
    assert mean[2].item() == pytest.approx(plain.item(), rel=1e-12)
    assert mean[0] < mean[2] < mean[1]
    # a head all on self (possible without mask_self) has no mean distance to others
    on_self = eye.double().expand(B, 1, 1, N, N)
    assert mean_attention_distance(on_self, positions).isnan().all()


def test_query_statistics_add_up_and_reject_bad_input(monkeypatch) -> None:
    g = torch.Generator().manual_seed(16)
    B, L, H, N = 5, 2, 2, 6
    attention = random_attention(g, (B, L, H, N))
    positions, _ = random_scene(g, B, N)
    whole = query_distance_statistics(attention, positions)
    parts = [
        query_distance_statistics(attention[s], positions[s]) for s in (slice(0, 2), slice(2, 5))
    ]
    for key, value in whole.items():
        torch.testing.assert_close(parts[0][key] + parts[1][key], value, **EXACT)
    monkeypatch.setattr(pairs_module, "MAX_CHUNK_ELEMENTS", 1)  # one scene per chunk
    for key, value in query_distance_statistics(attention, positions).items():
        torch.testing.assert_close(value, whole[key], **EXACT)
    with pytest.raises(ValueError, match="observables"):
        query_distance_statistics(attention, positions, observables=("kendall",))
    with pytest.raises(ValueError, match="method"):
        query_correlation(attention, positions, method="kendall")
    with pytest.raises(ValueError, match="positions"):
        mean_attention_distance(attention, positions[:, :3])


# --- correlation length of G(r) -----------------------------------------------------------------


def loop_correlation_length(connected: np.ndarray, r_grid: np.ndarray, contact: int) -> float:
    """Walk out from contact to the first radius with G <= G_c / 2; interpolate the crossing."""
    level = 0.5 * connected[contact]
    if not connected[contact] > 0:
        return math.nan
    for k in range(contact + 1, len(r_grid)):
        if connected[k] <= level:
            x0, x1, y0, y1 = r_grid[k - 1], r_grid[k], connected[k - 1], connected[k]
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return math.nan


def test_correlation_length_of_a_linear_profile_is_exact() -> None:
    r_grid = torch.tensor([0.5, 1.0, 1.25, 1.7, 2.9, 3.0, 4.4, 6.0], dtype=torch.float64)
    contact, length = 2, 2.2  # G falls linearly from G_c at 1.25 to 0 at 1.25 + 2.2
    slope_profile = torch.clamp(1.0 - (r_grid - 1.25) / length, min=0.0)
    profiles = torch.stack(
        [
            0.03 * slope_profile,  # half at 1.25 + 1.1 = 2.35 (linear: interpolation exact)
            -0.03 * slope_profile,  # no excess attention at contact: NaN
            torch.full_like(r_grid, 0.02),  # never falls: NaN
            torch.full_like(r_grid, math.nan),  # no pairs: NaN
        ]
    )
    found = correlation_length(profiles, r_grid, contact)
    assert found[0].item() == pytest.approx(1.25 + 0.5 * length, abs=1e-12)
    assert found[1:].isnan().all()
    assert correlation_length(profiles, r_grid, len(r_grid) - 1).isnan().all()
    with pytest.raises(ValueError, match="fraction"):
        correlation_length(profiles, r_grid, contact, fraction=1.0)
    with pytest.raises(ValueError, match="contact_index"):
        correlation_length(profiles, r_grid, 8)
    with pytest.raises(ValueError, match="radii"):
        correlation_length(profiles[:, :5], r_grid, contact)


def test_correlation_length_matches_loop_on_random_heads() -> None:
    g = torch.Generator().manual_seed(17)
    B, N = 4, 9
    positions, _ = random_scene(g, B, N)
    eye = torch.eye(N, dtype=torch.bool)
    distances = pairwise_distances(positions)
    heads = [(-k * distances).masked_fill(eye, -math.inf).softmax(-1) for k in (0.5, 1.0, 3.0)]
    random_heads = random_attention(g, (B, 1, 3, N))[:, 0]
    attention = torch.stack([*heads, *random_heads.unbind(1)], dim=1)[:, None]  # (B,1,6,N,N)
    r_grid = default_r_grid(0.6, num=40, stop=8.0)
    contact = 5
    found = correlation_length(connected_correlation(attention, positions, r_grid), r_grid, contact)
    reference = loop_connected_correlation(attention, positions, r_grid)
    expected = [loop_correlation_length(reference[0, h], r_grid.numpy(), contact) for h in range(6)]
    # G agrees with the loop to 1e-12, and the crossing is a smooth function of it
    np.testing.assert_allclose(found[0].numpy(), expected, rtol=1e-9, atol=1e-9)
    assert np.isfinite(expected[:3]).all()  # the local heads have a length
    # the sharper the decay of attention with distance, the shorter the length
    assert found[0, 2] < found[0, 1] < found[0, 0]


# --- collision score per band of query height --------------------------------------------------


def loop_band_of(y: float, box_height: float, num_bands: int) -> int:
    """The band of a height by comparing it with each band's edges (nearest band outside)."""
    for k in range(num_bands):
        if k * box_height / num_bands <= y < (k + 1) * box_height / num_bands:
            return k
    return 0 if y < 0 else num_bands - 1


@pytest.mark.parametrize("padded", [False, True])
def test_band_scores_match_loop_and_recombine_into_the_score(padded: bool) -> None:
    g = torch.Generator().manual_seed(18)
    B, L, H, N, K = 4, 2, 3, 9, 4
    box_height = 6.0
    valid = torch.rand(B, N, generator=g) < 0.8 if padded else None
    attention = random_attention(g, (B, L, H, N), valid=valid)
    positions, radii = random_scene(g, B, N)  # heights in [0, 6)
    positions[0, 0, 1], positions[0, 1, 1] = -0.2, 6.3  # outside: the nearest band
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    query_mask = torch.rand(B, N, generator=g) < 0.8
    bands = band_collision_score(attention, pair_mask, positions, box_height, K, query_mask, valid)
    assert bands.shape == (L, H, K) and bands.dtype == torch.float64
    heights = positions[..., 1].numpy()
    band_of = torch.tensor(
        [[loop_band_of(y, box_height, K) for y in scene] for scene in heights.tolist()]
    )
    assert torch.equal(height_bands(positions, box_height, K), band_of)
    for k in range(K):
        in_band = query_mask & (band_of == k)
        expected = loop_collision_score(attention, pair_mask, in_band, valid)
        np.testing.assert_allclose(bands[..., k].numpy(), expected, **EXACT, err_msg=f"band {k}")
    # recombination: the count-weighted mean of the band scores is the score
    sum_mass, count = grouped_collision_score_statistics(
        attention, pair_mask, band_of, K, query_mask, valid
    )
    assert (count.sum(-1) > 0).all() and (count > 0).sum() >= 3
    overall = collision_score_statistics(attention, pair_mask, query_mask, valid)
    torch.testing.assert_close(sum_mass.sum(-1), overall.sum_mass, **EXACT)
    torch.testing.assert_close(count.sum(-1), overall.count, **EXACT)
    recombined = torch.nansum(count * bands, dim=-1) / count.sum(dim=-1)
    torch.testing.assert_close(
        recombined, collision_score(attention, pair_mask, query_mask, valid), **EXACT
    )


def test_band_without_queries_is_nan_and_bad_bands_are_named() -> None:
    g = torch.Generator().manual_seed(19)
    attention = random_attention(g, (2, 1, 2, 6))
    positions, radii = random_scene(g, 2, 6)
    positions[..., 1] = 0.1 * positions[..., 1]  # every disc below 0.6: bands 1-3 empty
    pair_mask = neighbour_mask(positions, radii, tolerance=0.3)
    bands = band_collision_score(attention, pair_mask, positions, 8.0, 4)
    assert bands[..., 0].isfinite().all() and bands[..., 1:].isnan().all()
    # heights exactly on an edge belong to the band above it; the ceiling to the top band
    edges = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [0.0, 4.0], [0.0, 8.0]]])
    assert height_bands(edges, 8.0, 4).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="box_height"):
        height_bands(positions, 0.0)
    with pytest.raises(ValueError, match="num_bands"):
        height_bands(positions, 8.0, 0)
    out_of_range = torch.full((2, 6), 5)
    with pytest.raises(ValueError, match="groups"):
        grouped_collision_score_statistics(attention, pair_mask, out_of_range, 4)
