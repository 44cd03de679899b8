"""The worked examples of docs/callbacks.md: callbacks on models this package did not write.

The examples (``docs/examples/*.py``) are imported as they are shown in the docs and trained
briefly with every instrument and no adapter code; the scores in the histories must equal a
computation from attention weights worked out by hand from the model's own parameters, and
training must be bit-identical with and without the callbacks.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from conftest import read_rows, train
from lightning.pytorch import Callback

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    GaugeInvariantMonitor,
    LLCMonitor,
    LogSchedule,
)
from lit_emergence.functional import collision_score, neighbour_mask

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "callbacks.md"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encoder_attention_by_hand(net: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """(B, L, H, N, N) of EncoderNet from its weights: pre-norm, self masked, layer by layer."""
    x = net.embed(features)
    n = features.shape[1]
    no_self = torch.eye(n, dtype=torch.bool)
    patterns = []
    for layer in net.encoder.layers:
        attn = layer.self_attn
        heads, width = attn.num_heads, attn.embed_dim
        h = layer.norm1(x)
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = (h @ w[:width].T + b[:width]).view(*h.shape[:2], heads, -1).transpose(1, 2)
        k = (h @ w[width : 2 * width].T + b[width : 2 * width]).view(*h.shape[:2], heads, -1)
        scores = q @ k.permute(0, 2, 3, 1) / math.sqrt(width // heads)
        patterns.append(scores.masked_fill(no_self, float("-inf")).softmax(-1))
        x = layer(x, src_mask=no_self)
    return torch.stack(patterns, dim=1)


def test_encoder_example_gets_every_instrument_with_zero_adapter_code(tmp_path):
    encoder = example("transformer_encoder")
    schedule = LogSchedule(points_per_decade=2, every=4)  # includes the last step, 4
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16, schedule=schedule),
        AttentionDistanceMonitor(num_probe_samples=16, schedule=schedule),
        GaugeInvariantMonitor(schedule=schedule),
        LLCMonitor(
            per_head=True,
            num_chains=1,
            num_draws=3,
            num_burnin=1,
            step_size=1e-4,
            n_beta="B/ln(B)",
            localization=100.0,
            localization_check=None,
            batch_size=8,
            num_batches=1,
            schedule=lambda step: step == 4,
        ),
    ]
    module, _ = train(tmp_path, monitors, steps=4, module=encoder.EncoderSimulator(4))
    emergence = tmp_path / "run" / "emergence"
    heads = {(str(layer), str(head)) for layer in range(2) for head in range(8)}
    collision = read_rows(emergence / "collision_scores.csv")
    assert {(r["layer"], r["head"]) for r in collision} == heads
    assert {(r["layer"], r["head"]) for r in read_rows(emergence / "gauge_invariants.csv")} == heads
    components = {r["component"] for r in read_rows(emergence / "llc.csv")}
    assert components == {"model"} | {f"l{layer}h{head}" for layer in range(2) for head in range(8)}

    # The score at the last step from attention computed by hand (float32: atol 1e-6).
    probe = torch.load(emergence / "probe_collision_scores.pt", weights_only=True)
    module.eval()
    with torch.no_grad():
        attention = encoder_attention_by_hand(module.model, probe["features"])
    partners = neighbour_mask(probe["positions"], probe["radii"], 0.25, probe.get("valid"))
    expected = collision_score(attention.double(), partners, valid=probe.get("valid"))
    last = max(int(r["step"]) for r in collision)
    for row in collision:
        if int(row["step"]) == last:
            layer, head = int(row["layer"]), int(row["head"])
            assert float(row["score"]) == pytest.approx(float(expected[layer, head]), abs=1e-6)


def test_bert_example_scores_equal_its_own_attention_weights(tmp_path):
    pytest.importorskip("transformers")
    bert = example("huggingface_bert")
    monitor = CollisionDetectionMonitor(num_probe_samples=16, schedule=lambda step: step == 3)
    module, _ = train(tmp_path, [monitor], steps=3, module=bert.BertSimulator(4, width=16))
    emergence = tmp_path / "run" / "emergence"
    probe = torch.load(emergence / "probe_collision_scores.pt", weights_only=True)
    module.eval()
    with torch.no_grad():  # Hugging Face's own eager attention weights: an independent path
        module.bert.config._attn_implementation = "eager"
        same = torch.zeros(probe["features"].shape[:2], dtype=torch.long)
        out = module.bert(
            inputs_embeds=module.embed(probe["features"]),
            position_ids=same,
            output_attentions=True,
        )
    attention = torch.stack(out.attentions, dim=1)
    partners = neighbour_mask(probe["positions"], probe["radii"], 0.25, probe.get("valid"))
    expected = collision_score(attention.double(), partners, valid=probe.get("valid"))
    rows = read_rows(emergence / "collision_scores.csv")
    assert len(rows) == 2 * 8
    for row in rows:
        layer, head = int(row["layer"]), int(row["head"])
        assert float(row["score"]) == pytest.approx(float(expected[layer, head]), abs=1e-6)


class _Weights(Callback):
    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.parametrize("name", ["transformer_encoder", "huggingface_bert"])
def test_foreign_training_is_bit_identical_with_and_without_the_callbacks(tmp_path, name):
    if name == "huggingface_bert":
        pytest.importorskip("transformers")
    module_of = example(name)

    def build():
        return (
            module_of.EncoderSimulator(4)
            if name == "transformer_encoder"
            else module_of.BertSimulator(4, width=16)
        )

    runs = []
    for with_callbacks in (False, True):
        weights = _Weights()
        monitors = [
            CollisionDetectionMonitor(num_probe_samples=8),
            AttentionDistanceMonitor(num_probe_samples=8),
            GaugeInvariantMonitor(),
        ]
        callbacks = [weights, *(monitors if with_callbacks else [])]
        torch.manual_seed(0)
        train(tmp_path / str(with_callbacks), callbacks, steps=4, module=build())
        runs.append(weights.state)
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key


@pytest.mark.parametrize("name", ["transformer_encoder", "huggingface_bert"])
def test_the_docs_show_the_examples_as_they_are_tested(name):
    assert f"docs/examples/{name}.py" in DOCS.read_text()
