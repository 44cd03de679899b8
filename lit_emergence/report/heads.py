"""Every head at the end of training: final scores, class, LLC, and the example heads.

The class of a head is the one its collision monitor recorded at the last measured step
(``true`` at or above the run's ``true_threshold``, ``partial`` at or above
``partial_threshold``, else ``none``); the examples of Figure 3 are picked from these final
scores, as the paper's are (a 0.95 true, a 0.78 partial and a 0.02 non-collision head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import History, Run
from lit_emergence.records.schema import HEAD_CLASSES, classify_score, head_label, llc_component
from lit_emergence.report.probe import above_uniform


@dataclass(frozen=True)
class HeadSummary:
    """One head of one run at the end of training (NaN where a history is missing).

    Attributes:
        run: Run name.
        layer: Block index.
        head: Head index within the block.
        step: Last step of the collision history.
        score: Final collision-detection score (radius-based).
        uniform_score: The score of uniform attention on the run's probe set (the score's
            zero point; NaN without the probe set).
        score_above_uniform: ``(score - uniform_score) / (1 - uniform_score)``.
        strict: Final score on ground-truth contacts.
        impact: Final score on impact queries.
        head_class: ``"true"``, ``"partial"`` or ``"none"`` (``""`` without scores).
        query_spearman: Final per-query Spearman correlation of attention with distance,
            averaged over queries (the report's attention-distance correlation).
        pearson: Final attention-distance Pearson r over all pairs.
        g_contact: Final connected correlation at contact distance (an affine function of the
            score on a fixed probe set).
        llc: Final weight-refined LLC of the head (chain mean).
        llc_std: Its standard deviation over chains.
    """

    run: str
    layer: int
    head: int
    step: int
    score: float
    uniform_score: float
    score_above_uniform: float
    strict: float
    impact: float
    head_class: str
    query_spearman: float
    pearson: float
    g_contact: float
    llc: float
    llc_std: float

    @property
    def label(self) -> str:
        """``L<layer>H<head>``."""
        return head_label(self.layer, self.head)


def _final(history: History | None, column: str) -> float:
    """The column's value at the history's last step (NaN if absent)."""
    if history is None or len(history) == 0 or column not in history.columns:
        return math.nan
    steps = history.floats("step")
    return float(history.floats(column)[int(np.nanargmax(steps))])


def summarize_heads(run: Run, uniform: float = math.nan) -> list[HeadSummary]:
    """Final values of every head of a run, sorted by (layer, head).

    Args:
        run: A loaded run.
        uniform: The score of uniform attention on the run's probe set
            (:func:`lit_emergence.report.probe.uniform_score`), NaN if unknown.

    Returns:
        One :class:`HeadSummary` per head measured by the collision or distance history.
    """
    collision = run.histories.get("collision")
    distance = run.histories.get("distance")
    llc = run.histories.get("llc")
    summaries = []
    for layer, head in run.heads:
        scores = collision.for_head(layer, head) if collision is not None else None
        distances = distance.for_head(layer, head) if distance is not None else None
        llcs = llc.for_component(llc_component(layer, head)) if llc is not None else None
        score = _final(scores, "score")
        recorded = ""
        if scores is not None and len(scores):
            recorded = str(scores.columns["head_class"][int(np.nanargmax(scores.floats("step")))])
        summaries.append(
            HeadSummary(
                run=run.name,
                layer=layer,
                head=head,
                step=scores.last_step() if scores is not None and len(scores) else -1,
                score=score,
                uniform_score=uniform,
                score_above_uniform=above_uniform(score, uniform),
                strict=_final(scores, "strict"),
                impact=_final(scores, "impact"),
                head_class=recorded
                if recorded in HEAD_CLASSES
                else classify_score(score, *run.thresholds),
                query_spearman=_final(distances, "query_spearman"),
                pearson=_final(distances, "pearson"),
                g_contact=_final(distances, "g_contact"),
                llc=_final(llcs, "llc_mean"),
                llc_std=_final(llcs, "llc_std"),
            )
        )
    return summaries


def class_rank(head_class: str) -> int:
    """Sort key that lists heads strongest class first: true 0, partial 1, none 2, else 3."""
    order = tuple(reversed(HEAD_CLASSES))
    return order.index(head_class) if head_class in order else len(order)


def best_heads(summaries: list[HeadSummary], count: int = 1) -> list[HeadSummary]:
    """The ``count`` heads with the highest final collision score.

    Raises:
        Unavailable: If no head has a final score.
    """
    scored = [s for s in summaries if math.isfinite(s.score)]
    if not scored:
        raise Unavailable("no collision scores")
    return sorted(scored, key=lambda s: s.score, reverse=True)[:count]


def example_heads(summaries: list[HeadSummary]) -> dict[str, HeadSummary | None]:
    """One head per class for Figure 3, or ``None`` where a run has no head of that class.

    The true example is the best true head, the partial one the partial head with the median
    score (a typical one, as the paper's 0.78), the non-collision one the lowest-scoring head.
    """
    by_class = {
        name: sorted(
            (s for s in summaries if s.head_class == name and math.isfinite(s.score)),
            key=lambda s: s.score,
        )
        for name in HEAD_CLASSES
    }
    partial = by_class["partial"]
    return {
        "true": by_class["true"][-1] if by_class["true"] else None,
        "partial": partial[(len(partial) - 1) // 2] if partial else None,
        "none": by_class["none"][0] if by_class["none"] else None,
    }


def count_classes(summaries: list[HeadSummary], num_layers: int) -> dict[str, list[int]]:
    """Number of true and of partial heads in each block (Figure 5).

    Returns:
        ``{"true": [count per block], "partial": [...]}``.
    """
    counts = {name: [0] * num_layers for name in ("true", "partial")}
    for summary in summaries:
        if summary.head_class in counts and summary.layer < num_layers:
            counts[summary.head_class][summary.layer] += 1
    return counts
