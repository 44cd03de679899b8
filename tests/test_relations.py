"""Relation scores and 1-D (token) distances: masks and scores against loops, a language model.

Oracles are plain Python/numpy loops over queries and keys, in float64; the scores they check
are float64 sums over the same numbers in another order, so they agree to 1e-12. Attention
from a real model is float32 and is compared with its own float32 weights at 1e-6.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    Contact,
    PreviousToken,
    RelationScoreMonitor,
    SameGroup,
    WithinRadius,
)
from lit_emergence.callbacks.relation import as_relation, batch_positions
from lit_emergence.functional import (
    mean_attention_distance,
    neighbour_mask,
    pairwise_distances,
    previous_token_mask,
    query_correlation,
    relation_score,
    same_group_mask,
    within_radius_mask,
)


def random_attention(B: int, L: int, H: int, N: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, H, N, N, generator=generator, dtype=torch.float64).softmax(-1)


def relation_score_by_loops(attention: np.ndarray, relation: np.ndarray) -> np.ndarray:
    B, L, H, N, _ = attention.shape
    scores = np.zeros((L, H))
    for layer in range(L):
        for head in range(H):
            masses = [
                sum(
                    attention[b, layer, head, i, j]
                    for j in range(N)
                    if relation[b, i, j] and j != i
                )
                for b in range(B)
                for i in range(N)
                if any(relation[b, i, j] for j in range(N) if j != i)
            ]
            scores[layer, head] = np.mean(masses) if masses else np.nan
    return scores


# ----------------------------------------------------------------------------- masks


def test_relation_masks_equal_their_definitions_by_loops():
    B, N = 2, 7
    previous = previous_token_mask(B, N, offset=2)
    assert previous.shape == (B, N, N)
    for i in range(N):
        for j in range(N):
            assert bool(previous[1, i, j]) == (j == i - 2)

    positions = torch.tensor([[0.0, 1.0, 2.5, 4.0, 4.5, 9.0, 9.9]] * B)
    near = within_radius_mask(positions, 1.5)
    labels = torch.tensor([[0, 0, 1, 1, 1, 2, 0], [3, 3, 3, 3, 4, 4, 4]])
    same = same_group_mask(labels)
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[1, -1] = False
    same_valid = same_group_mask(labels, valid)
    for b in range(B):
        for i in range(N):
            for j in range(N):
                distance = abs(float(positions[b, i] - positions[b, j]))
                assert bool(near[b, i, j]) == (i != j and distance <= 1.5)
                assert bool(same[b, i, j]) == (i != j and int(labels[b, i]) == int(labels[b, j]))
                real = bool(valid[b, i] and valid[b, j])
                assert bool(same_valid[b, i, j]) == (bool(same[b, i, j]) and real)


def test_relation_masks_reject_bad_arguments_with_one_line_errors():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="offset"):
            previous_token_mask(1, 4, offset=bad)
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            within_radius_mask(torch.zeros(1, 3), bad)
        with pytest.raises(ValueError, match="radius"):
            WithinRadius(bad)
    with pytest.raises(ValueError, match="integer"):
        same_group_mask(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="identifier"):
        RelationScoreMonitor({"two words": "previous_token"})
    with pytest.raises(ValueError, match="reserved"):
        RelationScoreMonitor({"step": "previous_token"})
    with pytest.raises(ValueError, match="non-empty"):
        RelationScoreMonitor({})
    with pytest.raises(TypeError, match="relation must be"):
        as_relation(3)
    with pytest.raises(ValueError, match="no 'tokens' key"):
        batch_positions({"input_ids": torch.zeros(2, 5)}, "tokens", 5)


def test_relation_score_equals_the_loop_oracle_and_contact_is_the_neighbour_mask():
    attention = random_attention(3, 2, 3, 6)
    generator = torch.Generator().manual_seed(1)
    relation = previous_token_mask(3, 6) | (torch.rand(3, 6, 6, generator=generator) > 0.8)
    expected = relation_score_by_loops(attention.numpy(), relation.numpy())
    np.testing.assert_allclose(relation_score(attention, relation).numpy(), expected, atol=1e-12)

    positions = torch.rand(3, 6, 2, dtype=torch.float64, generator=generator) * 4
    radii = torch.full((3, 6), 0.5, dtype=torch.float64)
    contact = neighbour_mask(positions, radii, 0.25)
    batch = {"positions": positions, "radii": radii}
    assert torch.equal(Contact(0.25).mask(batch, 6)[0], contact)


# ----------------------------------------------------------------------------- 1-D positions


def test_one_dimensional_positions_are_token_distances():
    attention = random_attention(2, 1, 2, 5, seed=3)
    tokens = torch.arange(5, dtype=torch.float64).expand(2, 5)
    as_points = torch.stack([tokens, torch.zeros_like(tokens)], dim=-1)  # on the x axis
    distances = pairwise_distances(tokens)
    assert torch.equal(distances[0], (tokens[0, :, None] - tokens[0, None, :]).abs())
    assert torch.equal(distances, pairwise_distances(as_points))
    assert torch.equal(
        mean_attention_distance(attention, tokens), mean_attention_distance(attention, as_points)
    )
    spearman = query_correlation(attention, tokens, method="spearman")
    assert torch.allclose(spearman, query_correlation(attention, as_points, method="spearman"))

    # the mean attention distance by loops: sum_j A_ij |i - j| / sum_j A_ij over j != i
    a = attention.numpy()
    expected = np.zeros((1, 2))
    for head in range(2):
        values = [
            sum(a[b, 0, head, i, j] * abs(i - j) for j in range(5) if j != i)
            / sum(a[b, 0, head, i, j] for j in range(5) if j != i)
            for b in range(2)
            for i in range(5)
        ]
        expected[0, head] = np.mean(values)
    np.testing.assert_allclose(mean_attention_distance(attention, tokens).numpy(), expected)


# ----------------------------------------------------------------------------- a language model

transformers = pytest.importorskip("transformers")

VOCAB, TOKENS = 32, 12


class TinyLanguageModel(LightningModule):
    """A GPT-2 from a config (no download) predicting the next token; knows no callback."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=16,
            n_layer=2,
            n_head=4,
            n_positions=TOKENS,
            bos_token_id=0,
            eos_token_id=0,
        )
        self.gpt = transformers.GPT2LMHeadModel(config)

    def forward(self, input_ids: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.gpt(input_ids=input_ids).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        ids = batch["input_ids"]
        logits = self(ids)[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].flatten())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def token_batches(num: int, seed: int) -> dict[str, torch.Tensor]:
    """Sequences that repeat with period 3, and the segment (0 or 1) each token is in."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (num, 3), generator=generator)
    ids = start.repeat(1, TOKENS // 3)
    segment = (torch.arange(TOKENS) >= TOKENS // 2).long().expand(num, TOKENS)
    return {"input_ids": ids, "segment": segment}


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_language_model_relation_and_token_distance_scores_equal_its_own_attention(tmp_path):
    seed_everything(0)
    data = token_batches(64, seed=1)
    probe = token_batches(8, seed=2)
    # right padding (last 3 tokens of half the samples): a causal model's real tokens never
    # see it, and the monitors must leave the padded queries and keys out
    probe["attention_mask"] = torch.ones_like(probe["input_ids"])
    probe["attention_mask"][::2, -3:] = 0
    loader = torch.utils.data.DataLoader(
        [{k: v[i] for k, v in data.items()} for i in range(64)], batch_size=16
    )
    last = 60
    schedule = lambda step: step in (0, last)  # noqa: E731
    monitors = [
        RelationScoreMonitor(
            {
                "previous_token": "previous_token",
                "copy_source": PreviousToken(offset=2),
                "nearby": WithinRadius(2, positions="sequence"),
                "same_segment": SameGroup("segment"),
            },
            probe=probe,
            schedule=schedule,
        ),
        AttentionDistanceMonitor(positions="sequence", probe=probe, schedule=schedule),
    ]
    module = TinyLanguageModel()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=last,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=monitors,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, train_dataloaders=loader)

    module.eval()
    with torch.no_grad():  # Hugging Face's own eager weights: an independent path
        module.gpt.config._attn_implementation = "eager"
        out = module.gpt(input_ids=probe["input_ids"], output_attentions=True)
    attention = torch.stack(out.attentions, dim=1).double()  # (B, L, H, N, N), causal
    B, N = probe["input_ids"].shape
    relations = {
        "previous_token": previous_token_mask(B, N),
        "copy_source": previous_token_mask(B, N, offset=2),
        "nearby": within_radius_mask(torch.arange(N, dtype=torch.float64).expand(B, N), 2.0),
        "same_segment": same_group_mask(probe["segment"]),
    }
    real = probe["attention_mask"].bool()
    pairs = real[:, :, None] & real[:, None, :]
    expected = {
        name: relation_score_by_loops(attention.numpy(), (mask & pairs).numpy())
        for name, mask in relations.items()
    }
    tokens = torch.arange(N, dtype=torch.float64).expand(B, N)
    expected["mean_distance"] = mean_attention_distance(attention, tokens, valid=real).numpy()

    emergence = tmp_path / "emergence"
    rows = [r for r in read(emergence / "relation_scores.csv") if int(r["step"]) == last]
    distance_rows = [
        r for r in read(emergence / "attention_distance.csv") if int(r["step"]) == last
    ]
    assert len(rows) == len(distance_rows) == 2 * 4
    for row, distance_row in zip(rows, distance_rows, strict=True):
        layer, head = int(row["layer"]), int(row["head"])
        for name in relations:
            assert float(row[name]) == pytest.approx(expected[name][layer, head], abs=1e-6)
        # unit: half the "contact distance" of 1 position (no radii): distances in tokens
        value = float(distance_row["mean_distance"])
        assert value == pytest.approx(expected["mean_distance"][layer, head], abs=1e-6)
    # token i + 1 repeats token i - 2: the model learns to attend two tokens back
    first = [r for r in read(emergence / "relation_scores.csv") if int(r["step"]) == 0]
    assert max(float(r["copy_source"]) for r in first) < 0.3  # untrained: near uniform
    assert max(float(r["copy_source"]) for r in rows) > 0.5


def test_collision_monitor_is_the_relation_monitor_of_contact():
    monitor = CollisionDetectionMonitor(tolerance=0.3)
    assert isinstance(monitor, RelationScoreMonitor)
    assert list(monitor.relations) == ["score", "strict", "impact"]
    assert isinstance(monitor.relations["score"], Contact)
    assert monitor.relations["score"].tolerance == 0.3
