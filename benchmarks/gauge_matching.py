r"""Match the heads of two trained runs by gauge-invariant features; compare collision scores.

Heads of run B are paired with heads of run A within each block by
:func:`lit_emergence.gauge.match_checkpoints` (Hungarian assignment on the log singular values
of ``W_QK`` and ``W_OV``; no data is used). The table lists, for every head of B, its partner
in A, both final collision scores (``emergence/collision_scores.csv``), the score gap and the
feature distance. The summary compares the mean gap of the matching with the mean gap of a
random pairing (all pairs within a block) and of the identity pairing (head h with head h).

Example::

    python benchmarks/gauge_matching.py runs/seeds/quickstart-seed0 runs/seeds/quickstart-seed1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from trained_run import final_collision_scores, load_module

from lit_emergence.gauge import head_invariants, match_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--true-threshold", type=float, default=0.9)
    args = parser.parse_args()

    matching = match_checkpoints(
        *(run / "checkpoints" / "last.ckpt" for run in (args.run_a, args.run_b))
    )
    (scores_a, step_a), (scores_b, step_b) = (
        final_collision_scores(run) for run in (args.run_a, args.run_b)
    )
    print(f"A = {args.run_a} (step {step_a}), B = {args.run_b} (step {step_b})\n")
    print("| layer | head in B | matched head in A | score B | score A | gap | feature distance |")
    print("|---|---|---|---|---|---|---|")
    layers, heads = scores_b.shape
    matched_gaps, true_pairs = [], 0
    for layer in range(layers):
        for head in range(heads):
            partner = int(matching.permutation[layer, head])
            score_b, score_a = float(scores_b[layer, head]), float(scores_a[layer, partner])
            gap = abs(score_b - score_a)
            matched_gaps.append(gap)
            true_pairs += score_a >= args.true_threshold and score_b >= args.true_threshold
            print(
                f"| {layer} | {head} | {partner} | {score_b:.3f} | {score_a:.3f} | {gap:.3f} | "
                f"{float(matching.pair_cost[layer, head]):.2f} |"
            )
    random_gap = (scores_b[:, :, None] - scores_a[:, None, :]).abs().mean()
    identity_gap = (scores_b - scores_a).abs().mean()
    true_a = int((scores_a >= args.true_threshold).sum())
    true_b = int((scores_b >= args.true_threshold).sum())
    print(
        f"\nmean score gap: matched {torch.tensor(matched_gaps).mean():.3f}, "
        f"random pairing {random_gap:.3f}, identity pairing {identity_gap:.3f}"
    )
    print(
        f"true heads (score >= {args.true_threshold}): A {true_a}, B {true_b}; "
        f"matched true-true pairs {true_pairs}"
    )

    print(
        "\nper-head invariants (QK Frobenius, QK effective rank, OV Frobenius, OV effective rank):"
    )
    for name, run in (("A", args.run_a), ("B", args.run_b)):
        invariants = head_invariants(load_module(run))
        values = invariants.scalars()
        for layer in range(layers):
            cells = "  ".join(
                f"h{h} {float(values['qk_frobenius'][layer, h]):.2f}/"
                f"{float(values['qk_effective_rank'][layer, h]):.1f}/"
                f"{float(values['ov_frobenius'][layer, h]):.2f}/"
                f"{float(values['ov_effective_rank'][layer, h]):.1f}"
                for h in range(heads)
            )
            print(f"  {name} layer {layer}: {cells}")


if __name__ == "__main__":
    main()
