r"""LLC estimation: chains vectorised with ``torch.func`` vs one chain at a time in a Python loop.

Both sides estimate the local learning coefficient of the same ParticleTransformer (paper
size by default: 4 blocks x 8 heads, width 128, 32 particles) at the same point, on the same
fixed minibatches of simulated data (batch 256), with the same SGLD hyperparameters
(n_beta = B / ln B, gamma = 100, eps = 3e-4) and the same number of steps, in one process:

- ``vectorised``: :func:`lit_emergence.llc.estimate_llc` (whole model) and
  :func:`lit_emergence.llc.estimate_llc_many` (all heads), every chain in one vmap.
- ``loop``: the way a common library does it: per chain a deep copy of the model,
  ``loss.backward()``, then an SGLD update in a Python loop over the parameters; per head,
  head after head (only that head's tensors require grad; masks zero the rest).
- ``devinterp`` (whole model only, if ``import devinterp`` works; devinterp 1.3.2's
  ``estimate_learning_coeff_with_summary`` with its SGLD; not a project dependency).

Every side prints its time and its estimate as mean +- std over chains; the estimates must
agree within Monte Carlo error (different noise, same distribution). The vectorised side runs
like for like: the loop computes no diagnostics, so the localisation check and the MALA
acceptance are off unless ``--diagnostics`` (which prints what they cost); it keeps the
activations before each head's block per minibatch (``--no-prefix-cache`` to compare).
``n_beta`` is ``B / ln B`` on every side, as in the measurements in docs/performance.md.

Examples::

    python benchmarks/llc.py --device cuda                      # paper size, 8 chains x 200
    python benchmarks/llc.py --device cuda --cuda-graph --tf32  # whole SGLD steps replayed
    python benchmarks/llc.py --layers 2 --width 64 --particles 16 --batch 64 \
        --chains 4 --draws 40 --burnin 10 --head-chains 2 --threads 1   # CPU, a few minutes

Per head, ``--count-flops`` also prints the matrix-multiply FLOPs of one chain step on each
side, block by block: on a CPU with few threads the time follows them, so their ratio bounds
the per-head speed-up there (docs/performance.md).

On a CPU shared with other jobs, ``--threads 1`` avoids OpenMP oversubscription, which can
slow small kernels by an order of magnitude (both sides run with the same thread count), and
``--clock cpu`` times by the process's CPU time, which other jobs on the machine disturb less
than wall time (meaningful with one thread only).
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from simulated_data import simulated_datamodule
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lit_emergence.llc import (
    LLCResult,
    attention_head_restriction,
    attention_head_restrictions,
    default_n_beta,
    estimate_llc,
    estimate_llc_many,
)
from lit_emergence.model import ParticleTransformer

Batch = dict[str, Tensor]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--mode", default="both", choices=["model", "heads", "both"])
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256, help="minibatch size B")
    parser.add_argument("--num-batches", type=int, default=4, help="fixed minibatches, cycled")
    parser.add_argument("--chains", type=int, default=8, help="whole-model chains")
    parser.add_argument("--head-chains", type=int, default=4, help="chains per head")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--burnin", type=int, default=50)
    parser.add_argument("--step-size", type=float, default=3e-4)
    parser.add_argument("--localization", type=float, default=100.0)
    parser.add_argument("--train-steps", type=int, default=30, help="AdamW steps before w*")
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        help="torch.compile the vmapped gradient; optional mode, e.g. reduce-overhead",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true",
        help="replay each SGLD step from a CUDA graph (estimate_llc(cuda_graph=True))",
    )  # fmt: skip
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (both sides)")
    parser.add_argument("--chunk-size", type=int, default=None, help="vmap chunk (memory bound)")
    parser.add_argument("--skip-loop", action="store_true", help="time the vectorised side only")
    parser.add_argument("--no-devinterp", action="store_true")
    parser.add_argument(
        "--devinterp-heads", type=int, default=0,
        help="time devinterp head by head on this many heads (scaled to all heads)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"],
        help="wall time, or the process's CPU time (use with --threads 1 on a shared CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--diagnostics", action="store_true",
        help="also run the localisation check and the MALA acceptance (the loop has neither)",
    )  # fmt: skip
    parser.add_argument(
        "--count-flops", action="store_true",
        help="per head: also count the matmul FLOPs of one chain step on each side, by block",
    )  # fmt: skip
    parser.add_argument(
        "--no-prefix-cache", action="store_true",
        help="recompute the activations before each head's block at every step",
    )  # fmt: skip
    args = parser.parse_args()
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock cpu needs --device cpu --threads 1 (CPU time sums over threads)")
    return args


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_batches(args: argparse.Namespace, cache_dir: str) -> tuple[list[Batch], int, int]:
    """Fixed minibatches of real simulator data (features and normalised targets)."""
    datamodule = simulated_datamodule(args.particles, args.trajectories, args.batch, cache_dir)
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(
            {
                "features": batch["features"].to(args.device),
                "target": batch["target"].to(args.device),
            }
        )
        if len(batches) == args.num_batches:
            break
    if len(batches) < args.num_batches:
        raise ValueError(f"only {len(batches)} minibatches of {args.batch}; raise --trajectories")
    return batches, datamodule.feature_dim, datamodule.target_dim


def loss_fn(outputs: Tensor, batch: Batch) -> Tensor:
    return F.mse_loss(outputs, batch["target"])


def make_model(args: argparse.Namespace, batches: list[Batch], features: int, targets: int):
    torch.manual_seed(0)
    model = ParticleTransformer(features, targets, args.width, args.layers, args.heads)
    model = model.to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(args.train_steps):
        batch = batches[step % len(batches)]
        loss = loss_fn(model(batch["features"]), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The reference: one chain at a time, as a common SGLD library does it
# ---------------------------------------------------------------------------------------------


def loop_chain(
    model: nn.Module,
    batches: list[Batch],
    masks: dict[str, Tensor] | None,
    args: argparse.Namespace,
    n_beta: float,
    seed: int,
) -> Tensor:
    """Losses (steps,) of one SGLD chain: deep copy, backward, per-parameter update."""
    chain_model = copy.deepcopy(model)
    sampled = []
    for name, p in chain_model.named_parameters():
        if masks is None or name in masks:
            mask = None if masks is None else masks[name].to(p.dtype)
            sampled.append((p, p.detach().clone(), mask))
        else:
            p.requires_grad_(False)
    generator = torch.Generator(device=args.device).manual_seed(seed)
    eps, gamma = args.step_size, args.localization
    steps = args.burnin + args.draws
    losses = torch.empty(steps, device=args.device)
    for t in range(steps):
        batch = batches[t % len(batches)]
        loss = loss_fn(chain_model(batch["features"]), batch)
        for p, _, _ in sampled:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p, center, mask in sampled:
                drift = n_beta * p.grad + gamma * (p - center)
                noise = torch.randn(p.shape, generator=generator, device=p.device)
                update = -(eps / 2) * drift + math.sqrt(eps) * noise
                p.add_(update if mask is None else update * mask)
        losses[t] = loss.detach()
    return losses


def loop_llc(
    model: nn.Module,
    batches: list[Batch],
    masks: dict[str, Tensor] | None,
    chains: int,
    args: argparse.Namespace,
    n_beta: float,
) -> Tensor:
    """Per-chain LLC (chains,) with the estimator of lit_emergence.llc (paired L(w*))."""
    with torch.no_grad():
        init = torch.stack([loss_fn(model(b["features"]), b) for b in batches])
    steps = torch.arange(args.burnin, args.burnin + args.draws)
    reference = init[steps % len(batches)].mean()
    estimates = []
    for chain in range(chains):
        losses = loop_chain(model, batches, masks, args, n_beta, seed=1000 + chain)
        estimates.append(n_beta * (losses[args.burnin :].mean() - reference))
    return torch.stack(estimates).cpu()


def devinterp_llc(
    model: nn.Module,
    batches: list[Batch],
    args: argparse.Namespace,
    n_beta: float,
    num_chains: int,
    masks: dict[str, Tensor] | None = None,
):
    """Return devinterp 1.3.2's estimate (mean, std over chains), or None if it is not importable.

    ``masks`` restricts sampling to one head through devinterp's own
    ``optimize_over_per_model_param`` (every parameter needs an entry; absent ones are frozen).
    """
    try:
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError:
        return None
    from torch.utils.data import DataLoader

    # the same fixed minibatches, cycled: "batches" of one ready-made minibatch each
    loader = DataLoader(batches, batch_size=1, collate_fn=lambda items: items[0])
    optimize_over = None
    if masks is not None:
        optimize_over = {
            name: masks[name] if name in masks else torch.zeros_like(p, dtype=torch.bool)
            for name, p in model.named_parameters()
        }
    # Its default L(w*) averages the first `num_chains` batches; give it the mean over all the
    # cycled batches, the reference our estimator uses (it pairs each draw with its batch).
    with torch.no_grad():
        init_loss = float(torch.stack([loss_fn(model(b["features"]), b) for b in batches]).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its default n_beta of this loader is unused
        results = estimate_learning_coeff_with_summary(
            copy.deepcopy(model),
            loader,
            evaluate=lambda m, batch: loss_fn(m(batch["features"]), batch),
            sampling_method=SGLD,
            optimizer_kwargs={
                "lr": args.step_size,
                "localization": args.localization,
                "nbeta": n_beta,
            },
            num_chains=num_chains,
            num_draws=args.draws,
            num_burnin_steps=args.burnin,
            seed=0,
            device=args.device,
            verbose=False,
            optimize_over_per_model_param=optimize_over,
            init_loss=init_loss,
        )
    return results["llc/mean"], results["llc/std"]


# ---------------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = CLOCKS["wall"]


def timed(device: str, fn: Callable[[], object]) -> tuple[float, object]:
    synchronize(device)
    start = CLOCK()
    out = fn()
    synchronize(device)
    return CLOCK() - start, out


def describe(estimates: Tensor) -> str:
    return f"{float(estimates.mean()):8.3f} +- {float(estimates.std()):.3f}"


def agree(a: Tensor, b: Tensor, sigmas: float = 3.5) -> tuple[bool, float]:
    """Means agree within ``sigmas`` standard errors of their difference."""
    error = math.sqrt(float(a.var()) / a.numel() + float(b.var()) / b.numel())
    gap = abs(float(a.mean()) - float(b.mean()))
    return gap <= sigmas * error, gap / error if error > 0 else math.inf


def sgld_settings(args: argparse.Namespace, num_chains: int, n_beta: float) -> dict:
    """SGLD settings shared by the whole-model and per-head runs (they differ in chains)."""
    return dict(
        n_beta=n_beta,
        step_size=args.step_size,
        localization=args.localization,
        localization_check=4.0 if args.diagnostics else None,
        acceptance_every=4 if args.diagnostics else None,
        cache_prefix=not args.no_prefix_cache,
        num_chains=num_chains,
        num_draws=args.draws,
        num_burnin=args.burnin,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        chunk_size=args.chunk_size,
    )


def run_whole_model(model, batches, args, n_beta) -> None:
    common = sgld_settings(args, args.chains, n_beta)
    # warm-up (allocator, kernels, compilation), not timed
    estimate_llc(model, loss_fn, batches, **{**common, "num_draws": 3, "num_burnin": 0})
    seconds, result = timed(
        args.device, lambda: estimate_llc(model, loss_fn, batches, generator=0, **common)
    )
    assert isinstance(result, LLCResult)
    print(f"[whole model: {args.chains} chains x ({args.burnin} burn-in + {args.draws} draws)]")
    print(f"vectorised  : {seconds:8.2f} s   llc {describe(result.llc_per_chain)}")
    if result.num_diverged or result.still_climbing:
        print(f"  diverged {result.num_diverged}, trace rise {result.trace_rise:.2f}")
    if args.diagnostics:
        print(
            f"  verdict {result.verdict}, MALA acceptance {result.acceptance:.3f}, "
            f"at gamma/4 {result.llc_weak_localization:.3f} "
            f"(shift {result.localization_shift:+.1%})"
        )
    if not args.skip_loop:
        loop_seconds, loop = timed(
            args.device, lambda: loop_llc(model, batches, None, args.chains, args, n_beta)
        )
        ok, z = agree(result.llc_per_chain, loop)
        print(f"loop        : {loop_seconds:8.2f} s   llc {describe(loop)}")
        print(f"speed-up vs loop: {loop_seconds / seconds:6.2f}x; agree: {ok} ({z:.1f} SE)")
    if not args.no_devinterp:
        devinterp_seconds, reference = timed(
            args.device, lambda: devinterp_llc(model, batches, args, n_beta, args.chains)
        )
        if reference is None:
            print("devinterp   : not importable (pip install devinterp==1.3.2 to compare)")
        else:
            mean, std = reference
            error = math.sqrt((std**2 + float(result.llc_per_chain.var())) / args.chains)
            z = abs(mean - result.llc_mean) / error if error > 0 else math.inf
            print(f"devinterp   : {devinterp_seconds:8.2f} s   llc {mean:8.3f} +- {std:.3f}")
            print(
                f"speed-up vs devinterp: {devinterp_seconds / seconds:6.2f}x; "
                f"agree: {z <= 3.5} ({z:.1f} SE)"
            )


def run_heads(model, batches, args, n_beta) -> None:
    restrictions = attention_head_restrictions(model, include_model=False)
    common = sgld_settings(args, args.head_chains, n_beta)
    estimate_llc_many(
        model, loss_fn, batches, restrictions, **{**common, "num_draws": 3, "num_burnin": 0}
    )
    seconds, results = timed(
        args.device,
        lambda: estimate_llc_many(model, loss_fn, batches, restrictions, generator=0, **common),
    )
    num_heads = len(restrictions)
    print(
        f"[per head: {num_heads} heads x {args.head_chains} chains = "
        f"{num_heads * args.head_chains} chains x ({args.burnin} + {args.draws}) steps]"
    )
    print(f"vectorised  : {seconds:8.2f} s")
    if args.diagnostics:
        verdicts = [r.verdict for r in results.values()]
        print("  verdicts: " + ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts))))
    if args.devinterp_heads > 0:
        devinterp_heads(model, batches, args, n_beta, results, seconds)
    if args.count_flops:
        compare_flops(model, batches, args, n_beta)
    if args.skip_loop:
        for name, result in results.items():
            print(f"  {name:6s} {describe(result.llc_per_chain)}")
        return

    def loop_all_heads() -> dict[str, Tensor]:
        estimates = {}
        for layer in range(args.layers):
            for head in range(args.heads):
                masks = attention_head_restriction(model, layer, head)
                estimates[f"l{layer}h{head}"] = loop_llc(
                    model, batches, masks, args.head_chains, args, n_beta
                )
        return estimates

    loop_seconds, loop = timed(args.device, loop_all_heads)
    print(f"loop        : {loop_seconds:8.2f} s")
    print(f"speed-up vs loop: {loop_seconds / seconds:6.2f}x")
    agreeing = 0
    for name, result in results.items():
        ok, z = agree(result.llc_per_chain, loop[name])
        agreeing += ok
        print(
            f"  {name:6s} vectorised {describe(result.llc_per_chain)}   "
            f"loop {describe(loop[name])}   ({z:.1f} SE)"
        )
    print(f"heads whose estimates agree within 3.5 SE: {agreeing} of {num_heads}")


def matmul_flops(fn: Callable[[], object]) -> int:
    """Matrix-multiply FLOPs of ``fn()``; attention through its math path, which is counted."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flops_per_chain_step(run: Callable[[int], object], chains: int) -> float:
    """FLOPs of one chain step of ``run(steps)``: 6 steps minus 2 steps, so setup cancels."""
    return (matmul_flops(lambda: run(6)) - matmul_flops(lambda: run(2))) / (4 * chains)


def compare_flops(model, batches, args, n_beta) -> None:
    """Matmul FLOPs per chain step, vectorised (one block's heads together) vs the loop.

    On a CPU at small thread counts the time of a step follows its matmul work, so the ratio
    of the totals bounds the speed-up of any scheme that does the vectorised side's work.
    """
    # eager: FlopCounterMode sees operators as they are dispatched, which a compiled graph or
    # a CUDA-graph replay hides; the work is the same
    common = {
        **sgld_settings(args, args.head_chains, n_beta),
        "num_burnin": 0,
        "compile": False,
        "cuda_graph": False,
    }
    restrictions = attention_head_restrictions(model, include_model=False)
    totals = [0.0, 0.0]
    for layer in range(args.layers):
        block = {k: v for k, v in restrictions.items() if k.startswith(f"l{layer}h")}
        vectorised = flops_per_chain_step(
            lambda steps, block=block: estimate_llc_many(
                model, loss_fn, batches, block, **{**common, "num_draws": steps}
            ),
            len(block) * args.head_chains,
        )
        masks = attention_head_restriction(model, layer, 0)

        def one_loop_chain(steps: int, masks: dict[str, Tensor] = masks) -> Tensor:
            chain_args = argparse.Namespace(**{**vars(args), "burnin": 0, "draws": steps})
            return loop_chain(model, batches, masks, chain_args, n_beta, seed=0)

        loop = flops_per_chain_step(one_loop_chain, 1)
        totals[0] += vectorised * len(block)
        totals[1] += loop * len(block)
        print(
            f"  block {layer} heads: {vectorised / 1e6:9.1f} MFLOP per chain step vectorised, "
            f"{loop / 1e6:9.1f} loop ({loop / vectorised:.2f}x fewer)"
        )
    print(f"matmul FLOPs, all heads: loop / vectorised = {totals[1] / totals[0]:.2f}")


def devinterp_heads(model, batches, args, n_beta, results, vectorised_seconds) -> None:
    """Time devinterp head by head on the first ``--devinterp-heads`` heads, scaled to all heads.

    Every head costs devinterp the same (a full forward and backward per chain step, whatever
    the mask), so the time of all heads is the measured time per head times their number.
    """
    names = list(results)[: args.devinterp_heads]
    start = time.perf_counter()
    estimates = {}
    for name in names:
        layer, head = (int(part) for part in name[1:].split("h"))
        masks = attention_head_restriction(model, layer, head)
        estimates[name] = devinterp_llc(model, batches, args, n_beta, args.head_chains, masks)
        if estimates[name] is None:
            print("devinterp   : not importable (pip install devinterp==1.3.2 to compare)")
            return
    synchronize(args.device)
    per_head = (time.perf_counter() - start) / len(names)
    all_heads = per_head * len(results)
    print(
        f"devinterp   : {per_head:8.2f} s per head (measured on {len(names)} heads) -> "
        f"{all_heads:.1f} s for all {len(results)}"
    )
    print(f"speed-up vs devinterp head by head: {all_heads / vectorised_seconds:6.2f}x")
    for name, (mean, std) in estimates.items():
        ours = results[name].llc_per_chain
        error = math.sqrt((std**2 + float(ours.var())) / args.head_chains)
        z = abs(mean - float(ours.mean())) / error if error > 0 else math.inf
        print(
            f"  {name:6s} vectorised {describe(ours)}   devinterp {mean:8.3f} +- {std:.3f}"
            f"   ({z:.1f} SE)"
        )


def main() -> None:
    args = parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.compile:
        # every estimate (warm-up, timed, each group of restrictions) compiles its own gradient
        # function; keep Dynamo from falling back to eager after its default 8 per code object
        torch._dynamo.config.recompile_limit = 64
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    with tempfile.TemporaryDirectory() as cache_dir:
        batches, features, targets = make_batches(args, cache_dir)
    model = make_model(args, batches, features, targets)
    n_beta = default_n_beta(args.batch)
    print(
        f"model: {args.layers} blocks x {args.heads} heads, width {args.width} "
        f"({model.num_parameters()} parameters), {args.particles} particles; "
        f"{args.num_batches} fixed minibatches of {args.batch}; n_beta = B/ln B = {n_beta:.2f}, "
        f"gamma {args.localization:g}, eps {args.step_size:g}; device {args.device} "
        f"({device_name}), torch threads {torch.get_num_threads()}, compile {args.compile}, "
        f"cuda graph {args.cuda_graph}, "
        f"tf32 {args.tf32}, diagnostics {args.diagnostics}, "
        f"prefix cache {not args.no_prefix_cache}, clock {args.clock}"
    )
    if args.mode in ("model", "both"):
        run_whole_model(model, batches, args, n_beta)
    if args.mode in ("heads", "both"):
        run_heads(model, batches, args, n_beta)


if __name__ == "__main__":
    main()
