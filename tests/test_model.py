"""Tests for lit_emergence.model.ParticleTransformer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_emergence.model import ParticleTransformer

IN, OUT = 5, 2


def make_model(
    seed: int = 0,
    *,
    mask_self: bool = True,
    std: float = 0.5,
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> ParticleTransformer:
    """Small model with larger-than-default random weights, so attention is far from uniform."""
    torch.manual_seed(seed)
    config = dict(d_model=32, n_layers=2, n_heads=4, mask_self=mask_self)
    config.update(kwargs)
    model = ParticleTransformer(IN, OUT, **config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.to(dtype).eval()


def make_inputs(
    seed: int, batch: int = 3, n: int = 7, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and a padding mask with a varying number of real particles per scene."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, n, IN, generator=g, dtype=dtype)
    padding = torch.rand(batch, n, generator=g) < 0.7
    padding[0] = True  # one scene without padding
    padding[1, :] = False
    padding[1, 2] = True  # a lone real particle: with mask_self its query has no key
    return features, padding


# --- fast path vs probe path -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask_self", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_fast_and_probe_paths_agree(seed: int, mask_self: bool, padded: bool) -> None:
    model = make_model(seed, mask_self=mask_self)
    features, padding = make_inputs(seed)
    padding_mask = padding if padded else None
    with torch.no_grad():
        fast = model(features, padding_mask)
        probe, attention = model(features, padding_mask, return_attention=True)
    # attention must be far from uniform (about 1/6 here), or agreement would prove little
    assert attention.amax(dim=-1).mean() > 0.4
    assert torch.isfinite(fast).all() and torch.isfinite(probe).all()
    # 1e-5: the two paths differ only in fp32 rounding of the same sums (observed <= 2e-6 with
    # |outputs| up to ~8)
    assert (fast - probe).abs().max() <= 1e-5


def test_attention_shape_rows_and_self_entries() -> None:
    model = make_model(3, mask_self=True)
    features, padding = make_inputs(3)
    B, N = padding.shape
    with torch.no_grad():
        _, attention = model(features, padding, return_attention=True)
    assert attention.shape == (B, model.n_layers, model.n_heads, N, N)
    eye = torch.eye(N, dtype=torch.bool)
    assert (attention[..., eye] == 0).all()  # self entries exactly 0
    assert (attention.permute(0, 4, 1, 2, 3)[~padding] == 0).all()  # padded keys exactly 0
    # rows sum to 1 when the query has a visible key (another real particle), else 0
    real_others = padding.sum(dim=1, keepdim=True) - padding.long()  # (B, N)
    expected = (
        (real_others > 0)
        .to(attention.dtype)[:, None, None, :]
        .expand(-1, model.n_layers, model.n_heads, -1)
    )
    # 1e-6: a softmax row sums to 1 up to fp32 rounding over N <= 7 terms
    torch.testing.assert_close(attention.sum(-1), expected, atol=1e-6, rtol=0)


def test_unmasked_self_attention_allowed() -> None:
    model = make_model(4, mask_self=False)
    features, _ = make_inputs(4)
    with torch.no_grad():
        _, attention = model(features, return_attention=True)
    assert (attention.diagonal(dim1=-2, dim2=-1) > 0).all()
    # 1e-6: fp32 rounding of a softmax row sum
    torch.testing.assert_close(
        attention.sum(-1), torch.ones_like(attention[..., 0]), atol=1e-6, rtol=0
    )


# --- symmetries --------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_self", [True, False])
def test_permutation_equivariance(mask_self: bool) -> None:
    # float64: permuting particles only reorders sums, so results agree to ~1e-15 relative
    model = make_model(5, mask_self=mask_self, dtype=torch.float64)
    features, padding = make_inputs(5, dtype=torch.float64)
    perm = torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, attention = model(features, padding, return_attention=True)
        out_p, attention_p = model(features[:, perm], padding[:, perm], return_attention=True)
        fast_p = model(features[:, perm], padding[:, perm])
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-12, rtol=0)
    torch.testing.assert_close(fast_p, out[:, perm], atol=1e-12, rtol=0)
    torch.testing.assert_close(attention_p, attention[..., perm, :][..., perm], atol=1e-12, rtol=0)


def test_head_gauge_transform_leaves_function_unchanged() -> None:
    """Head h owns slice h of q/k/v outputs and out_proj inputs (gauge maps: docs/gauge.md)."""
    model = make_model(6, dtype=torch.float64)
    features, padding = make_inputs(6, dtype=torch.float64)
    with torch.no_grad():
        before = model(features, padding)
        attn = model.blocks[1].attn
        s = attn.head_slice(2)
        g = torch.Generator().manual_seed(1)
        eye = torch.eye(attn.head_dim, dtype=torch.float64)
        A = eye + 0.3 * torch.randn(attn.head_dim, attn.head_dim, generator=g, dtype=torch.float64)
        Bm = eye + 0.3 * torch.randn(attn.head_dim, attn.head_dim, generator=g, dtype=torch.float64)
        # q_h -> q_h A, k_h -> k_h A^-T, v_h -> v_h B, W_O,h -> B^-1 W_O,h (row-vector convention)
        for proj, M in [(attn.q_proj, A), (attn.k_proj, torch.linalg.inv(A).T), (attn.v_proj, Bm)]:
            proj.weight[s] = M.T @ proj.weight[s]
            proj.bias[s] = proj.bias[s] @ M
        attn.out_proj.weight[:, s] = attn.out_proj.weight[:, s] @ torch.linalg.inv(Bm).T
        # and swap heads 0 and 1 of block 0: a head permutation
        attn0 = model.blocks[0].attn
        order = torch.cat(
            [torch.arange(attn0.head_dim) + attn0.head_dim, torch.arange(attn0.head_dim)]
        )
        idx = torch.cat([order, torch.arange(2 * attn0.head_dim, model.d_model)])
        for proj in (attn0.q_proj, attn0.k_proj, attn0.v_proj):
            proj.weight.copy_(proj.weight[idx])
            proj.bias.copy_(proj.bias[idx])
        attn0.out_proj.weight.copy_(attn0.out_proj.weight[:, idx])
        after, attention = model(features, padding, return_attention=True)
    # float64 with well-conditioned A, B: agreement to ~1e-12 is rounding only
    torch.testing.assert_close(after, before, atol=1e-10, rtol=0)
    assert attention.shape[2] == model.n_heads


# --- padding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_self", [True, False])
def test_padding_does_not_change_real_outputs(mask_self: bool) -> None:
    model = make_model(7, mask_self=mask_self)
    g = torch.Generator().manual_seed(7)
    real = torch.randn(2, 5, IN, generator=g)
    garbage = 1e3 * torch.randn(2, 4, IN, generator=g)
    garbage[0, 0, 0] = float("nan")  # even non-finite padding must not leak
    # interleave padded slots between real ones
    features = torch.cat([real, garbage], dim=1)
    order = torch.randperm(9, generator=g)
    features = features[:, order]
    padding = (order < 5).expand(2, -1).clone()
    real_positions = torch.argsort(order)[:5]
    with torch.no_grad():
        alone = model(real)
        for return_attention in (False, True):
            padded = model(features, padding, return_attention=return_attention)
            padded = padded[0] if return_attention else padded
            assert torch.isfinite(padded).all()
            # 1e-5: same real tokens, only masked (exactly zero-weight) keys added; fp32 rounding
            torch.testing.assert_close(padded[:, real_positions], alone, atol=1e-5, rtol=0)


def test_queries_without_keys_are_finite_with_zero_attention() -> None:
    model = make_model(8, mask_self=True)
    features = torch.randn(2, 4, IN)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    padding[0, 1] = True  # scene 0: a single real particle; scene 1: no real particle at all
    with torch.no_grad():
        fast = model(features, padding)
        probe, attention = model(features, padding, return_attention=True)
        single = model(features[:1, 1:2])  # N == 1 without padding
        single_probe, single_attention = model(features[:1, 1:2], return_attention=True)
    for t in (fast, probe, single, single_probe):
        assert torch.isfinite(t).all()
    assert (attention[0, :, :, 1] == 0).all()
    assert (single_attention == 0).all()
    # 1e-5: fp32 rounding; the lone particle sees nothing, alone or among padding
    torch.testing.assert_close(fast, probe, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[0, 1:2], single[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(single_probe, single, atol=1e-5, rtol=0)


# --- hook points -------------------------------------------------------------------------------


def test_hook_pattern_captures_attention() -> None:
    model = make_model(9)
    features, padding = make_inputs(9)
    captured: dict[int, torch.Tensor] = {}
    handles = [
        block.attn.hook_pattern.register_forward_hook(
            lambda module, args, output, layer=layer: captured.__setitem__(layer, output)
        )
        for layer, block in enumerate(model.blocks)
    ]
    with torch.no_grad():
        model(features, padding)  # the fast path computes no pattern
        assert captured == {}
        _, attention = model(features, padding, return_attention=True)
    for h in handles:
        h.remove()
    assert sorted(captured) == list(range(model.n_layers))
    for layer, pattern in captured.items():
        assert torch.equal(pattern, attention[:, layer])


def test_hook_pattern_can_replace_pattern() -> None:
    model = make_model(10, mask_self=False)
    features, _ = make_inputs(10)
    with torch.no_grad():
        baseline = model(features, return_attention=True)[0]
        handle = model.blocks[0].attn.hook_pattern.register_forward_hook(
            lambda module, args, output: torch.full_like(output, 1.0 / output.shape[-1])
        )
        patched, attention = model(features, return_attention=True)
        handle.remove()
    # 1e-6: the replaced uniform pattern is exactly 1/N up to fp32 rounding
    torch.testing.assert_close(
        attention[:, 0], torch.full_like(attention[:, 0], 1 / 7), atol=1e-6, rtol=0
    )
    assert not torch.allclose(patched, baseline)


# --- training path -----------------------------------------------------------------------------


def test_gradients_flow_through_fast_path() -> None:
    model = make_model(11, std=0.1).train()
    features, padding = make_inputs(11)
    out = model(features, padding)
    out[padding].square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fast_path_traces_without_graph_breaks() -> None:
    # fullgraph=True raises on any graph break (data-dependent control flow, .item(), ...);
    # the eager backend checks tracing only, which keeps this fast on CPU
    model = make_model(12)
    features, padding = make_inputs(12)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        # 1e-6: same ops in the same order; tracing must not change numerics beyond rounding
        torch.testing.assert_close(
            compiled(features, padding), model(features, padding), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(compiled(features), model(features), atol=1e-6, rtol=0)


def test_dropout_is_active_only_in_training() -> None:
    model = make_model(13, dropout=0.5)
    features, _ = make_inputs(13)
    with torch.no_grad():
        assert torch.equal(model(features), model(features))
        model.train()
        assert not torch.equal(model(features), model(features))


# --- construction ------------------------------------------------------------------------------


def test_defaults_sizes_and_init() -> None:
    model = ParticleTransformer(4, 2)
    assert model.head_dim == 8
    assert len(model.blocks) == 2
    D, hidden = 64, 256
    per_block = 4 * (D * D + D) + (D * hidden + hidden + hidden * D + D) + 2 * 2 * D
    expected = (4 * D + D) + 2 * per_block + 2 * D + (D * 2 + 2)
    assert model.num_parameters() == expected
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all((m.bias == 0).all() for m in linears)
    weights = torch.cat([m.weight.flatten() for m in linears])
    # ~1e5 draws from N(0, 0.02^2): the sample std is within 1 % of 0.02
    assert abs(weights.std().item() - 0.02) < 2e-4


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_heads": 0}, "n_heads"),
        ({"d_model": 30, "n_heads": 8}, "d_model"),
        ({"in_features": 0}, "in_features"),
        ({"out_features": 0}, "out_features"),
        ({"d_model": 0}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"mlp_ratio": -1.0}, "mlp_ratio"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_invalid_arguments_raise_one_line_errors(kwargs: dict, argument: str) -> None:
    config = {"in_features": 4, "out_features": 2, **kwargs}
    with pytest.raises(ValueError, match=argument) as info:
        ParticleTransformer(**config)
    assert "\n" not in str(info.value)


def test_bad_padding_mask_raises() -> None:
    model = make_model(14)
    features, padding = make_inputs(14)
    with pytest.raises(ValueError, match="padding_mask"):
        model(features, padding.float())
    with pytest.raises(ValueError, match="padding_mask"):
        model(features, padding[:, :-1])
