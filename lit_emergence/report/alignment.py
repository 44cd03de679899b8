"""Lining up the heads of several runs (seeds) by gauge-invariant head matching.

Head ``h`` of one seed has no reason to be head ``h`` of another: the heads of a block are
interchangeable, and their weights are defined only up to a gauge transformation. So every
run's heads are matched to those of a reference run (the first run whose checkpoint loads),
block by block, from the runs' final checkpoints alone (``Run.checkpoint``: ``last.ckpt``,
else the newest): the features are :func:`lit_emergence.gauge.head_features` (log singular
values of ``W_QK`` and ``W_OV``), the pairing the minimum-cost assignment of
:func:`lit_emergence.gauge.match_heads` (Hungarian algorithm, Euclidean feature distance). No
data is used.

Its quality is read from the final collision scores, which the matching never sees: the mean
score gap of matched pairs against that of the identity pairing (head ``h`` with head ``h``)
and of a uniformly random pairing within each block. The random pairing's gap is computed
exactly, as the mean over every pair of heads in a block, which is what a uniformly random
one-to-one pairing gives on average (each pair is equally likely).

Runs whose models differ in shape (blocks, heads, width) cannot be matched; they are listed as
:class:`~lit_emergence.records.errors.Problem` and left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from lit_emergence.gauge import attention_modules, head_features, match_heads
from lit_emergence.records.errors import Problem, Unavailable
from lit_emergence.records.run import Run
from lit_emergence.records.schema import head_label
from lit_emergence.report.checkpoint import CheckpointCache
from lit_emergence.report.heads import HeadSummary
from lit_emergence.report.tables import markdown_table, number, write_csv

#: The ``item`` of every :class:`Problem` the alignment records.
ALIGNMENT_ITEM = "head alignment"
#: Columns of ``alignment_summary.csv``.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "run",
    "block",
    "pairs",
    "gap_matched",
    "gap_identity",
    "gap_random",
    "true_pairs_matched",
    "true_pairs_identity",
    "true_pairs_random",
    "true_pairs_possible",
)
#: Per-run columns of ``alignment.csv``, each prefixed with ``<run>_``.
RUN_COLUMNS: tuple[str, ...] = ("head", "score", "class", "cost")


@dataclass(frozen=True)
class ModelShape:
    """The head layout of a model: two runs can be aligned only when theirs are equal.

    Attributes:
        n_layers: Transformer blocks.
        n_heads: Heads per block.
        d_model: Width of the residual stream.
    """

    n_layers: int
    n_heads: int
    d_model: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        """The shape of a :class:`~lit_emergence.module.LearnedSimulator` (or its transformer)."""
        layers = attention_modules(model)
        width = layers[0].read_heads().query.shape[1]  # W_Q is (D, Dh) per head
        return cls(len(layers), layers[0].num_heads, int(width))

    def __str__(self) -> str:
        return f"n_layers={self.n_layers}, n_heads={self.n_heads}, d_model={self.d_model}"


@dataclass(frozen=True, eq=False)
class AlignedRun:
    """One run's heads lined up with the reference run's.

    Attributes:
        name: Run name.
        checkpoint: The checkpoint the features were computed from.
        matched_head: (L, H) int; ``matched_head[l, h]`` is this run's head matched to the
            reference's head ``(l, h)`` (the identity for the reference itself).
        cost: (L, H) feature distance of each matched pair, by reference head (0 for the
            reference itself).
        scores: (L, H) final collision scores of this run's heads by their own index (NaN
            where not measured).
        classes: (L, H) final classes by their own index (``""`` where not measured).
    """

    name: str
    checkpoint: Path
    matched_head: np.ndarray
    cost: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def aligned(self, values: np.ndarray) -> np.ndarray:
        """Per-head ``values`` (L, H) by own index, reordered to the reference's heads."""
        return np.take_along_axis(values, self.matched_head, axis=1)


@dataclass(frozen=True, eq=False)
class Alignment:
    """Every aligned run's heads lined up with the reference's.

    Attributes:
        shape: The common model shape.
        runs: The aligned runs, the reference first.
    """

    shape: ModelShape
    runs: list[AlignedRun]

    @property
    def reference(self) -> AlignedRun:
        """The run every other one is matched to."""
        return self.runs[0]

    @property
    def heads(self) -> list[tuple[int, int]]:
        """The reference's heads, ``(layer, head)`` in order: the rows of ``alignment.csv``."""
        layers, heads = range(self.shape.n_layers), range(self.shape.n_heads)
        return [(layer, head) for layer in layers for head in heads]

    def columns(self) -> list[str]:
        """Columns of ``alignment.csv``: ``layer, head``, then ``<run>_head`` ... per run."""
        return ["layer", "head"] + [f"{r.name}_{c}" for r in self.runs for c in RUN_COLUMNS]

    def records(self) -> list[dict[str, Any]]:
        """Rows of ``alignment.csv``: one per reference head."""
        rows = []
        for layer, head in self.heads:
            row: dict[str, Any] = {"layer": layer, "head": head}
            for run in self.runs:
                own = int(run.matched_head[layer, head])
                row[f"{run.name}_head"] = own
                row[f"{run.name}_score"] = float(run.scores[layer, own])
                row[f"{run.name}_class"] = str(run.classes[layer, own])
                row[f"{run.name}_cost"] = float(run.cost[layer, head])
            rows.append(row)
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """Rows of ``alignment_summary.csv``.

        Every other run against the reference over all blocks, then all of them together per
        block (when there are several) and over all blocks (the headline).
        """
        others = self.runs[1:]
        every_block = list(range(self.shape.n_layers))
        rows = [
            {"run": run.name, "block": "all", **self._pair_statistics([run], every_block)}
            for run in others
        ]
        if len(every_block) > 1:
            rows.extend(
                {"run": "all runs", "block": layer, **self._pair_statistics(others, [layer])}
                for layer in every_block
            )
        overall = self._pair_statistics(others, every_block)
        rows.append({"run": "all runs", "block": "all", **overall})
        return rows

    def _pair_statistics(
        self, others: Sequence[AlignedRun], blocks: Sequence[int]
    ) -> dict[str, Any]:
        """Score gaps and true-head agreement of the matched, identity and random pairings.

        Gaps are pooled over every pair with two finite scores; the random pairing's is the
        mean over all pairs within a block, its true-head count the expectation
        ``true_ref * true_run / H`` per block.
        """
        reference = self.reference
        matched, identity, every_pair = [], [], []
        true_matched = true_identity = true_possible = 0
        true_random = 0.0
        for run in others:
            for layer in blocks:
                reference_scores, own_scores = reference.scores[layer], run.scores[layer]
                order = run.matched_head[layer]
                matched.append(np.abs(reference_scores - own_scores[order]))
                identity.append(np.abs(reference_scores - own_scores))
                every_pair.append(np.abs(reference_scores[:, None] - own_scores[None, :]).ravel())
                reference_true = reference.classes[layer] == "true"
                own_true = run.classes[layer] == "true"
                true_matched += int((reference_true & own_true[order]).sum())
                true_identity += int((reference_true & own_true).sum())
                true_random += reference_true.sum() * own_true.sum() / own_true.size
                true_possible += int(min(reference_true.sum(), own_true.sum()))
        matched_gaps = np.concatenate(matched)
        return {
            "pairs": int(np.isfinite(matched_gaps).sum()),
            "gap_matched": _finite_mean(matched_gaps),
            "gap_identity": _finite_mean(np.concatenate(identity)),
            "gap_random": _finite_mean(np.concatenate(every_pair)),
            "true_pairs_matched": true_matched,
            "true_pairs_identity": true_identity,
            "true_pairs_random": float(true_random),
            "true_pairs_possible": true_possible,
        }

    def score_grid(self, matched: bool = True) -> np.ndarray:
        """Final scores as (L * H, runs): rows the reference's heads, columns the runs.

        Args:
            matched: Pair by the matching (``True``) or by head index (``False``).
        """
        columns = [run.aligned(run.scores) if matched else run.scores for run in self.runs]
        return np.stack([column.reshape(-1) for column in columns], axis=1)

    def head_grid(self) -> np.ndarray:
        """The matched heads' indices as (L * H, runs), like :meth:`score_grid`."""
        return np.stack([run.matched_head.reshape(-1) for run in self.runs], axis=1)


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _final_by_head(
    summaries: Sequence[HeadSummary], shape: ModelShape
) -> tuple[np.ndarray, np.ndarray]:
    """Final scores and classes as (L, H) arrays by head index (NaN and ``""`` where absent)."""
    scores = np.full((shape.n_layers, shape.n_heads), math.nan)
    classes = np.full((shape.n_layers, shape.n_heads), "", dtype=object)
    for summary in summaries:
        if summary.layer < shape.n_layers and summary.head < shape.n_heads:
            scores[summary.layer, summary.head] = summary.score
            classes[summary.layer, summary.head] = summary.head_class
    return scores, classes


def align_runs(
    runs: Sequence[Run],
    summaries: Mapping[str, Sequence[HeadSummary]],
    checkpoints: CheckpointCache | None = None,
) -> tuple[Alignment | None, list[Problem]]:
    """Match every run's heads to the reference run's, from their checkpoints.

    Args:
        runs: The runs, the intended reference first (the first whose checkpoint loads is
            used).
        summaries: Run name -> its heads' final values (scores and classes for the tables).
        checkpoints: The report's checkpoints, shared with Figure 3 (default: a fresh cache,
            i.e. every checkpoint is read here).

    Returns:
        ``(alignment, problems)``: the :class:`Alignment` of the runs that could be aligned
        (``None`` when fewer than two could), and why the others could not.
    """
    checkpoints = CheckpointCache() if checkpoints is None else checkpoints
    problems: list[Problem] = []
    loaded: list[tuple[Run, ModelShape, Any]] = []
    for run in runs:
        try:
            module = checkpoints.get(run).module
        except Unavailable as reason:
            problems.append(Problem(run.name, ALIGNMENT_ITEM, f"not aligned: {reason}"))
            continue
        loaded.append((run, ModelShape.of(module), head_features(module)))
    if not loaded:
        return None, problems
    reference, shape, reference_features = loaded[0]
    identity = np.tile(np.arange(shape.n_heads), (shape.n_layers, 1))
    aligned = [
        AlignedRun(
            reference.name,
            reference.checkpoint,
            identity,
            np.zeros(identity.shape),
            *_final_by_head(summaries.get(reference.name, ()), shape),
        )
    ]
    for run, run_shape, features in loaded[1:]:
        if run_shape != shape:
            problems.append(
                Problem(
                    run.name,
                    ALIGNMENT_ITEM,
                    f"not aligned: its model ({run_shape}) differs from that of the reference "
                    f"run {reference.name} ({shape}); only heads of equal shapes can be matched",
                )
            )
            continue
        # The reference as B: the matching is indexed by the reference's heads.
        matching = match_heads(features, reference_features)
        aligned.append(
            AlignedRun(
                run.name,
                run.checkpoint,
                matching.permutation.numpy(),
                matching.pair_cost.numpy(),
                *_final_by_head(summaries.get(run.name, ()), shape),
            )
        )
    if len(aligned) < 2:
        problems.append(
            Problem(
                "",
                ALIGNMENT_ITEM,
                "fewer than two runs with a loadable checkpoint and the same model shape",
            )
        )
        return None, problems
    return Alignment(shape, aligned), problems


def _cell(run: AlignedRun, layer: int, head: int) -> str:
    own = int(run.matched_head[layer, head])
    head_class = str(run.classes[layer, own])
    parts = [
        head_label(layer, own),
        number(run.scores[layer, own]),
        f"**{head_class}**" if head_class == "true" else head_class,
    ]
    if run.cost[layer, head] > 0:
        parts.append(f"({number(run.cost[layer, head], 2)})")
    return " ".join(part for part in parts if part)


def _summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "run vs reference",
        "block",
        "pairs",
        "gap: matched",
        "identity",
        "random",
        "true↔true: matched",
        "identity",
        "random (expected)",
        "at most",
    ]
    return markdown_table(
        header,
        [
            [
                str(row["run"]),
                str(row["block"]),
                str(row["pairs"]),
                f"**{number(row['gap_matched'])}**",
                number(row["gap_identity"]),
                number(row["gap_random"]),
                f"**{row['true_pairs_matched']}**",
                str(row["true_pairs_identity"]),
                number(row["true_pairs_random"], 2),
                str(row["true_pairs_possible"]),
            ]
            for row in rows
        ],
    )


def alignment_markdown(alignment: Alignment) -> str:
    """The alignment as Markdown: headline, one row per reference head, and the summary."""
    summary = alignment.summary()
    total = summary[-1]
    reference = alignment.reference
    text = [
        f"Reference run: **{reference.name}**. The heads of every other run are matched to its "
        "heads within each block, from each run's checkpoint "
        f"(`{reference.checkpoint.name}`) alone: minimum total distance between gauge-invariant "
        "features (log singular values of W_QK and W_OV), Hungarian assignment; no data is "
        "used. The final collision scores below were not used by the matching.\n",
        f"Over all runs, the mean collision-score gap between a reference head and its partner "
        f"is **{number(total['gap_matched'])}** matched, {number(total['gap_identity'])} with "
        f"the identity pairing (head h with head h) and {number(total['gap_random'])} with a "
        f"random pairing; **{total['true_pairs_matched']}** of at most "
        f"{total['true_pairs_possible']} true-true pairs are formed "
        f"(identity {total['true_pairs_identity']}, random "
        f"{number(total['true_pairs_random'], 2)} expected).\n",
        "Each cell: the matched head, its final collision score and class, and (in brackets) "
        "its feature distance to the reference head (`alignment.csv` has full precision).\n",
        markdown_table(
            ["reference head", *(run.name for run in alignment.runs)],
            [
                [head_label(layer, head)] + [_cell(run, layer, head) for run in alignment.runs]
                for layer, head in alignment.heads
            ],
        ),
        "Mean collision-score gap |score − reference score| over pairs of heads: matched, by "
        "head index (identity), and for a uniformly random pairing within each block (computed "
        "exactly as the mean over all pairs in the block). True↔true: reference true heads "
        "paired with a true head (random: the expectation; at most: the smaller number of true "
        "heads, per block).\n",
        _summary_markdown(summary),
    ]
    return "\n".join(text)


def write_alignment(out_dir: Path, alignment: Alignment) -> dict[str, Path]:
    """Write ``alignment.csv``, ``alignment_summary.csv`` and ``alignment.md`` into ``out_dir``.

    Returns:
        Name -> path of every file written.
    """
    markdown = out_dir / "alignment.md"
    markdown.write_text("# Cross-run head alignment\n\n" + alignment_markdown(alignment))
    return {
        "alignment.csv": write_csv(
            out_dir / "alignment.csv", alignment.columns(), alignment.records()
        ),
        "alignment_summary.csv": write_csv(
            out_dir / "alignment_summary.csv", SUMMARY_COLUMNS, alignment.summary()
        ),
        "alignment.md": markdown,
    }
