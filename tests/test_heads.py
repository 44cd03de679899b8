"""The head-layout abstraction on models this package did not write.

Every family the adapters recognise is checked the same way: the recorded attention equals an
independent computation (by hand from the weights for torch's attention; Hugging Face's own
``output_attentions`` of an eager copy for theirs), every head's parameter slices read the maps
the forward pass uses, writing heads back is exact, and a random gauge transformation of the
model's own parameters keeps its function and its invariants. Models are tiny, built from
configs (nothing is downloaded), and float64 where a tolerance of 1e-8 is asked for.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lit_emergence.gauge import apply_gauge, canonical_gauge, head_invariants, random_gauge
from lit_emergence.heads import (
    AttentionAdapter,
    AttentionLayer,
    HeadMap,
    attention_layers,
    call_model,
    capture_attention,
    register_attention_adapter,
)
from lit_emergence.heads import registry as heads_registry
from lit_emergence.model import ParticleTransformer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

D, H, N, B = 16, 4, 6, 3


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the models
def encoder(norm_first: bool) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        D, H, 2 * D, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


class CustomBlock(nn.Module):
    """A user's block around nn.MultiheadAttention with kdim/vdim != embed_dim."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, H, batch_first=True)
        self.mlp = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class CustomModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.blocks = nn.Sequential(CustomBlock(), CustomBlock())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def hf_model(kind: str) -> nn.Module:
    torch.manual_seed(2)
    common = {"vocab_size": 40, "hidden_size": D, "num_hidden_layers": 2}
    if kind == "bert":
        config = transformers.BertConfig(
            **common, num_attention_heads=H, intermediate_size=2 * D, max_position_embeddings=16
        )
        return transformers.BertModel(config).eval()
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=40,
            n_embd=D,
            n_layer=2,
            n_head=H,
            n_positions=16,
            bos_token_id=0,
            eos_token_id=0,
        )
        return transformers.GPT2Model(config).eval()
    config = transformers.LlamaConfig(
        **common,
        num_attention_heads=H,
        num_key_value_heads=2,
        intermediate_size=2 * D,
        max_position_embeddings=16,
        attention_bias=True,
    )
    return transformers.LlamaModel(config).eval()


def token_batch() -> dict[str, torch.Tensor]:
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 4:] = 0
    return {
        "input_ids": torch.randint(0, 40, (B, N), generator=_generator(3)),
        "attention_mask": mask,
    }


def by_hand(mha: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    """(B, H, N, N) softmax(q k^T / sqrt(Dh)) straight from the module's weights."""
    if mha._qkv_same_embed_dim:
        wq, wk = mha.in_proj_weight[:D], mha.in_proj_weight[D : 2 * D]
    else:
        wq, wk = mha.q_proj_weight, mha.k_proj_weight
    bq, bk = mha.in_proj_bias[:D], mha.in_proj_bias[D : 2 * D]
    q = (h @ wq.T + bq).view(h.shape[0], -1, H, D // H).transpose(1, 2)
    k = (h @ wk.T + bk).view(h.shape[0], -1, H, D // H).transpose(1, 2)
    return (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_transformer_encoder_attention_is_recorded_through_its_fast_path(norm_first):
    model = encoder(norm_first)
    x = torch.randn(B, N, D, generator=_generator(4))
    with torch.no_grad():
        before = model(x)  # eval + no_grad: torch's fused encoder kernel
    attention = capture_attention(model, lambda: model(x))
    assert attention.shape == (B, 2, H, N, N)
    first = model.layers[0]
    expected = by_hand(first.self_attn, first.norm1(x) if norm_first else x)
    # float32 arithmetic in a different order: round-off ~1e-7, so 1e-6.
    torch.testing.assert_close(attention[:, 0], expected, atol=1e-6, rtol=0)
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is back
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)


def test_multihead_attention_in_a_custom_block():
    model = CustomModel().eval()
    x = torch.randn(B, N, D, generator=_generator(5))
    layers = attention_layers(model)
    assert [layer.name for layer in layers] == ["blocks.0.attn", "blocks.1.attn"]
    attention = capture_attention(model, lambda: call_model(model, (x, None)))
    expected = by_hand(model.blocks[0].attn, model.blocks[0].norm(x))
    torch.testing.assert_close(attention[:, 0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_hugging_face_attention_equals_their_own_output_attentions(kind):
    model = hf_model(kind)
    batch = {**token_batch(), "labels": torch.zeros(B)}
    attention = capture_attention(model, lambda: call_model(model, batch))
    assert model.config._attn_implementation == "sdpa"  # restored after recording
    eager = (
        type(model)
        ._from_config(
            type(model.config).from_dict(model.config.to_dict()), attn_implementation="eager"
        )
        .eval()
    )
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference = eager(**token_batch(), output_attentions=True).attentions
    torch.testing.assert_close(attention, torch.stack(reference, dim=1), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- weights
ALL_MODELS = {
    "encoder": lambda: encoder(False),
    "encoder-pre-norm": lambda: encoder(True),
    "custom-mha": lambda: CustomModel().eval(),
    "bert": lambda: hf_model("bert"),
    "gpt2": lambda: hf_model("gpt2"),
    "llama": lambda: hf_model("llama"),
    "particle": lambda: ParticleTransformer(4, 2, d_model=D, n_layers=2, n_heads=H).eval(),
}


def run(name: str, model: nn.Module) -> torch.Tensor:
    if name in ("bert", "gpt2", "llama"):
        return call_model(model, token_batch()).last_hidden_state
    dtype = next(model.parameters()).dtype
    width = 4 if name == "particle" else D
    return model(torch.randn(B, N, width, generator=_generator(6), dtype=dtype))


@pytest.mark.parametrize("name", list(ALL_MODELS))
def test_head_masks_partition_the_heads_parameters(name):
    model = ALL_MODELS[name]()
    parameters = dict(model.named_parameters())
    for layer in attention_layers(model):
        masks = [layer.head_masks(head) for head in range(layer.num_heads)]
        for param_name in masks[0]:
            count = torch.stack([m[param_name] for m in masks if param_name in m]).sum(0)
            assert parameters[param_name].shape == count.shape
            if layer.grouped and param_name.split(".")[-2] in ("k_proj", "v_proj"):
                assert int(count.max()) == layer.num_heads // layer.kv_heads  # a shared group
            else:
                assert int(count.max()) == 1  # no entry belongs to two heads
        # Q, K, V weights and W_O: 4 D Dh entries per head without grouping
        weights = sum(int(m.sum()) for key, m in masks[0].items() if "bias" not in key)
        assert weights == 4 * D * layer.head_dim


@pytest.mark.parametrize("name", list(ALL_MODELS))
def test_gauge_transformation_keeps_function_and_invariants(name):
    model = ALL_MODELS[name]().double()
    outputs = run(name, model)
    invariants = head_invariants(model)
    transform = random_gauge(model, condition_number=10.0, generator=11)
    moved = apply_gauge(model, transform)
    # float64 with condition number 10: round-off ~1e-15 relative, far below 1e-8.
    torch.testing.assert_close(run(name, moved), outputs, atol=1e-8, rtol=1e-8)
    moved_invariants = head_invariants(moved)
    for key, value in invariants.scalars().items():
        torch.testing.assert_close(moved_invariants.scalars()[key], value, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(
        moved_invariants.qk_singular_values, invariants.qk_singular_values, atol=1e-8, rtol=1e-8
    )
    # the transformation did move the weights
    before = attention_layers(model)[0].read_heads()
    after = attention_layers(moved)[0].read_heads()
    assert (before.value - after.value).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["encoder", "bert", "gpt2", "particle"])
def test_canonical_gauge_keeps_the_function_of_foreign_models(name):
    model = ALL_MODELS[name]().double()
    torch.testing.assert_close(
        run(name, canonical_gauge(model)), run(name, model), atol=1e-8, rtol=1e-8
    )


def test_rotary_and_grouped_layers_refuse_transformations_that_would_change_them():
    model = hf_model("llama").double()
    layer = attention_layers(model)[0]
    assert layer.rotary == "half" and layer.grouped
    general = random_gauge(ParticleTransformer(4, 2, d_model=D, n_layers=2, n_heads=H), generator=1)
    with pytest.raises(ValueError, match="rotary"):
        apply_gauge(model, general)
    with pytest.raises(ValueError, match="grouped-query"):
        random_gauge(model, permute_heads=True, generator=1)
    with pytest.raises(ValueError, match="grouped-query"):
        canonical_gauge(model)


# ----------------------------------------------------------------------------- registry
class TinyAttention(nn.Module):
    """A user's own attention: one fused (3D, D) weight, heads written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.pattern: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            t.view(x.shape[0], -1, H, D // H).transpose(1, 2) for t in self.qkv(x).chunk(3, -1)
        )
        pattern = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1)
        self.pattern = pattern.detach()
        return self.proj((pattern @ v).transpose(1, 2).reshape(x.shape))


class TinyAdapter(AttentionAdapter):
    def matches(self, module):
        return isinstance(module, TinyAttention)

    def layer(self, name, module):
        maps = [HeadMap("qkv.weight", "qkv.bias", offset=i * D) for i in range(3)]
        return AttentionLayer(name, module, H, D // H, *maps, output=HeadMap("proj.weight"))

    def hooks(self, layer, record):
        return [layer.module.register_forward_hook(lambda m, a, o: record(m.pattern))]


def test_an_unknown_attention_is_named_and_a_registered_adapter_makes_it_work(monkeypatch):
    model = nn.Sequential(TinyAttention(), TinyAttention()).double()
    with pytest.raises(ValueError, match=r"no attention adapter fits TinyAttention \(at 0\)"):
        attention_layers(model)
    monkeypatch.setattr(heads_registry, "_ADAPTERS", list(heads_registry._ADAPTERS))
    register_attention_adapter(TinyAdapter())
    x = torch.randn(B, N, D, generator=_generator(7), dtype=torch.float64)
    attention = capture_attention(model, lambda: model(x))
    torch.testing.assert_close(attention[:, 1], model[1].pattern)
    outputs = model(x)
    torch.testing.assert_close(apply_gauge(model, random_gauge(model, generator=2))(x), outputs)


def test_a_model_without_attention_and_a_batch_without_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="found no attention layer in Linear"):
        attention_layers(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cannot tell the model inputs of a batch with labels"):
        call_model(nn.Linear(2, 2), {"labels": torch.zeros(2)})
    with pytest.raises(ValueError, match="add_bias_kv"):
        attention_layers(nn.MultiheadAttention(D, H, add_bias_kv=True))
    with pytest.raises(TypeError, match="needs an AttentionAdapter"):
        register_attention_adapter(object())


def test_transformer_lens_hooked_transformer_if_installed():
    lens = pytest.importorskip("transformer_lens")
    if not hasattr(lens, "HookedTransformerConfig"):
        pytest.skip("TransformerLens >= 4 has no HookedTransformer")
    config = lens.HookedTransformerConfig(
        n_layers=2,
        d_model=D,
        n_ctx=N,
        d_head=D // H,
        n_heads=H,
        d_vocab=40,
        act_fn="relu",
        dtype=torch.float64,
        seed=0,
    )
    model = lens.HookedTransformer(config)
    tokens = torch.randint(0, 40, (B, N), generator=_generator(8))
    attention = capture_attention(model, lambda: model(tokens))
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(attention[:, 1], cache["pattern", 1], atol=1e-12, rtol=0)
    logits = model(tokens)
    moved = apply_gauge(model, random_gauge(model, generator=3))
    torch.testing.assert_close(moved(tokens), logits, atol=1e-8, rtol=1e-8)
