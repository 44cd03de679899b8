r"""Per-head LLC under gauge transformations of a trained model, and in the canonical gauge.

A gauge transformation (``W_Q -> W_Q A``, ``W_K -> W_K A^{-T}``, ``W_V -> W_V B``,
``W_O -> B^{-1} W_O``) changes the weights but not the function, so the learning coefficient is
unchanged; the SGLD estimate need not be (isotropic noise and localisation in weight
coordinates). For a few heads of a trained run this prints the weight-refined LLC estimate

- in the original gauge (as trained);
- after random gauges with condition number ~10 and ~100 (``--draws`` each, all heads of the
  model transformed, head order kept);
- in the canonical (balanced SVD) gauge reached from each of those points.

Every estimate uses the same fixed training minibatches and the same SGLD seed (common random
numbers), so differences come from the gauge alone. Defaults: the true collision head with the
highest final score and the layer's lowest-scoring head, 4 chains x (20 burn-in + 60 draws),
eps = 3e-4, gamma = 100, 2 minibatches of 128 (n_beta = 128 / ln 128 = 26.4).

Example::

    python benchmarks/llc_gauge.py --run runs/seeds/quickstart-seed0 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from trained_run import final_collision_scores, load_datamodule, load_module

from lit_emergence.callbacks import ProbeSet
from lit_emergence.gauge import apply_gauge, canonical_gauge, gauge_imbalance, random_gauge
from lit_emergence.llc import LLCResult, attention_head_restriction, estimate_llc_many


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/seeds/quickstart-seed0"))
    parser.add_argument("--heads", default=None, help="e.g. l1h0,l1h3 (default: see above)")
    parser.add_argument("--conditions", default="10,100", help="condition numbers")
    parser.add_argument("--draws", type=int, default=3, help="random gauges per condition")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--num-draws", type=int, default=60)
    parser.add_argument("--burnin", type=int, default=20)
    parser.add_argument("--step-size", type=float, default=3e-4)
    parser.add_argument("--localization", type=float, default=100.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="SGLD seed, the same everywhere")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def default_heads(scores: torch.Tensor) -> list[tuple[int, int]]:
    """The highest-scoring head and the lowest-scoring head of its layer."""
    flat = torch.nan_to_num(scores, nan=-1.0)
    layer, head = divmod(int(flat.argmax()), scores.shape[1])
    weak = int(torch.nan_to_num(scores[layer], nan=2.0).argmin())
    return [(layer, head), (layer, weak)]


def mean_std(values: torch.Tensor) -> str:
    return f"{values.mean():.1f} ± {values.std(correction=0):.1f}"


def parse_heads(text: str) -> list[tuple[int, int]]:
    heads = []
    for item in text.split(","):
        layer, head = item.strip().removeprefix("l").split("h")
        heads.append((int(layer), int(head)))
    return heads


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    module = load_module(args.run)
    model = module.model
    scores, step = final_collision_scores(args.run)
    heads = parse_heads(args.heads) if args.heads else default_heads(scores)
    names = [f"l{layer}h{head}" for layer, head in heads]

    datamodule = load_datamodule(args.run)
    probe = ProbeSet(datamodule.probe_batch(args.batch * args.batches, seed=0, split="train"))
    batches = list(probe.batches(args.batch))
    restrictions = {
        name: attention_head_restriction(model, layer, head)
        for name, (layer, head) in zip(names, heads, strict=True)
    }
    settings = dict(
        num_chains=args.chains,
        num_draws=args.num_draws,
        num_burnin=args.burnin,
        step_size=args.step_size,
        localization=args.localization,
        generator=args.seed,
    )

    def loss_fn(outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(outputs, batch["target"])

    features = batches[0]["features"]
    with torch.no_grad():
        reference = model(features)

    def estimate(point: torch.nn.Module) -> tuple[dict[str, LLCResult], float]:
        with torch.no_grad():
            change = float((point(features) - reference).norm() / reference.norm())
        return estimate_llc_many(point, loss_fn, batches, restrictions, **settings), change

    def cell(result: LLCResult) -> str:
        flag = ("!" if result.diverged.any() else "") + ("*" if result.still_climbing else "")
        error = result.llc_std / math.sqrt(args.chains)
        return f"{result.llc_mean:.1f} ± {error:.1f}{flag}"

    qk_imbalance, ov_imbalance = gauge_imbalance(model)
    print(f"run {args.run}, step {step}; heads (final collision score, QK/OV imbalance):")
    for name, (layer, head) in zip(names, heads, strict=True):
        print(
            f"  {name}: score {float(scores[layer, head]):.3f}, imbalance "
            f"{float(qk_imbalance[layer, head]):.3f} / {float(ov_imbalance[layer, head]):.3f}"
        )
    print(
        f"SGLD: {args.chains} chains x ({args.burnin} + {args.num_draws}), eps {args.step_size}, "
        f"gamma {args.localization}, {args.batches} x {args.batch} samples, "
        f"n_beta {args.batch / math.log(args.batch):.1f}, seed {args.seed} everywhere; "
        "! = a chain diverged, * = still climbing\n"
    )
    header = "| gauge | output change |" + "".join(f" {n} as is | {n} canonical |" for n in names)
    print(header)
    print("|---|---|" + "---|---|" * len(names))

    points = [("original", model)]
    for condition in (float(c) for c in args.conditions.split(",")):
        for draw in range(args.draws):
            transform = random_gauge(model, condition, generator=1000 * int(condition) + draw)
            points.append((f"cond {condition:g} #{draw}", apply_gauge(model, transform)))
    start = time.perf_counter()
    by_group: dict[str, list[tuple[dict[str, LLCResult], dict[str, LLCResult]]]] = {}
    for label, point in points:
        as_is, change = estimate(point)
        canonical, canonical_change = estimate(canonical_gauge(point))
        cells = "".join(f" {cell(as_is[n])} | {cell(canonical[n])} |" for n in names)
        print(f"| {label} | {change:.1e} / {canonical_change:.1e} |{cells}", flush=True)
        by_group.setdefault(label.split(" #")[0], []).append((as_is, canonical))
    print(f"\n{2 * len(points)} estimates in {time.perf_counter() - start:.0f} s")

    print("\nsummary: mean ± std over the gauges of each group (as is -> canonical)")
    for group, pairs in by_group.items():
        parts = []
        for name in names:
            as_is = torch.tensor([pair[0][name].llc_mean for pair in pairs])
            canonical = torch.tensor([pair[1][name].llc_mean for pair in pairs])
            parts.append(f"{name} {mean_std(as_is)} -> {mean_std(canonical)}")
        print(f"  {group}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
