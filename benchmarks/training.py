"""Optimizer steps per second: ``lit-emergence`` training through Lightning vs a plain eager loop.

Both sides train the same model (paper size by default: 4 blocks x 8 heads, width 128,
32 particles, batch 256) on the same simulated data with AdamW, in one process, one after the
other; the first ``--warmup`` steps of each are excluded from the timing (so compilation and
CUDA-graph capture, which happen in the first step, are not timed).

The plain side is always the baseline a user would write first: fp32, eager, batches from the
package's CPU DataLoader copied to the device every step. The Lightning side takes the fast
options: ``--compile [MODE]`` (``model.compile``), ``--cuda-graph`` (``model.cuda_graph``),
``--device-batches`` (``data.device_batches``), ``--fused`` (``AdamW(fused=True)``) and
``--precision``; ``--fast`` turns on all four and bf16-mixed.

    python benchmarks/training.py                       # CPU, paper-size model, eager
    python benchmarks/training.py --device cuda --precision bf16-mixed
    python benchmarks/training.py --device cuda --fast --steps 1000 --warmup 20

The Lightning Trainer runs with what a user's trainer would have minus the outputs: no
progress bar, no logger, no checkpointing, no model summary, no validation; the module's
``self.log`` calls still run (Lightning keeps the loss on the device and reads it only when
it writes, which nothing does here). It finishes by checking, in fp32, that the trained
model's fast (SDPA) and probe (explicit softmax) paths agree, on the outputs and on the
training loss through the module's (compiled, if asked) training-loss function.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from simulated_data import simulated_datamodule

from lit_emergence.data import ParticleDataModule
from lit_emergence.model import ParticleTransformer
from lit_emergence.module import LearnedSimulator


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side")
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--trajectories", type=int, default=64, help="training trajectories")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="MODE",
        help="Lightning side: torch.compile the training loss (optionally a mode name)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="Lightning side: CUDA-graph training step"
    )
    parser.add_argument(
        "--device-batches", action="store_true", help="Lightning side: batches built on device"
    )
    parser.add_argument("--fused", action="store_true", help="Lightning side: fused AdamW")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="all four above, and --precision bf16-mixed unless --precision is given",
    )
    args = parser.parse_args()
    if args.fast:
        args.compile = args.compile or True
        args.cuda_graph = args.device_batches = args.fused = True
        if "--precision" not in sys.argv:
            args.precision = "bf16-mixed"
    return args


def fast_options(args: argparse.Namespace) -> str:
    """The Lightning side's settings, as a short label."""
    options = [args.precision]
    if args.compile:
        options.append("compile" if args.compile is True else f"compile={args.compile}")
    for flag in ("cuda_graph", "device_batches", "fused"):
        if getattr(args, flag):
            options.append(flag.replace("_", "-"))
    return ", ".join(options)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_eager_steps_per_second(args: argparse.Namespace, datamodule: ParticleDataModule) -> float:
    """Time a hand-written training loop: no Lightning, no compile, fp32."""
    torch.manual_seed(0)
    model = ParticleTransformer(
        datamodule.feature_dim, datamodule.target_dim, args.width, args.layers, args.heads
    ).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    total = args.warmup + args.steps
    step, start = 0, 0.0
    while step < total:
        for batch in datamodule.train_dataloader():
            if step == args.warmup:
                synchronize(args.device)
                start = time.perf_counter()
            features = batch["features"].to(args.device, non_blocking=True)
            target = batch["target"].to(args.device, non_blocking=True)
            loss = F.mse_loss(model(features), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == total:
                break
    synchronize(args.device)
    return args.steps / (time.perf_counter() - start)


class StepTimer(Callback):
    """Time the optimizer steps after the first ``warmup`` ones."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Start the clock at the first timed step."""
        if trainer.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        """Stop the clock."""
        synchronize(self.device)
        self.end = time.perf_counter()


def lightning_steps_per_second(
    args: argparse.Namespace, datamodule: ParticleDataModule
) -> tuple[float, LearnedSimulator]:
    """Time the package's own path: LearnedSimulator + ParticleDataModule under a Trainer."""
    torch.manual_seed(0)
    module = LearnedSimulator(
        in_features=datamodule.feature_dim,
        out_features=datamodule.target_dim,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=args.heads,
        optimizer=lambda params: torch.optim.AdamW(
            params, lr=3e-3, weight_decay=0.01, fused=args.fused or None
        ),
        compile=args.compile,
        cuda_graph=args.cuda_graph,
    )
    timer = StepTimer(args.warmup, args.device)
    trainer = Trainer(
        accelerator=args.device,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return args.steps / (timer.end - timer.start), module


def fast_probe_differences(
    module: LearnedSimulator, datamodule: ParticleDataModule
) -> tuple[float, float]:
    """Fast vs probe path in fp32: max |output difference| and |training-loss difference|."""
    module = module.float().eval()
    model = module.model
    batch = next(iter(datamodule.train_dataloader()))
    device = next(model.parameters()).device
    features, target = batch["features"].to(device), batch["target"].to(device)
    with torch.no_grad():
        fast = model(features)
        probe, _ = model(features, return_attention=True)
        loss = module.training_loss(features, target)
    output_difference = (fast - probe).abs().max().item()
    return output_difference, (loss - F.mse_loss(probe, target)).abs().item()


def main() -> None:
    args = parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(
        f"model: {args.layers} blocks x {args.heads} heads, width {args.width}, "
        f"{args.particles} particles, batch {args.batch}; device {args.device} ({device_name}), "
        f"torch threads {torch.get_num_threads()}; {args.steps} timed steps after {args.warmup}"
    )
    print(
        "Lightning trainer: no progress bar, logger, checkpointing, model summary or "
        "validation; self.log on"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        datamodule = simulated_datamodule(args.particles, args.trajectories, args.batch, cache_dir)
        eager = plain_eager_steps_per_second(args, datamodule)
        print(f"plain eager loop     : {eager:8.2f} steps/s (fp32, CPU DataLoader)")
        if args.device_batches:  # same data from the cache, batches built on the device
            datamodule = simulated_datamodule(
                args.particles, args.trajectories, args.batch, cache_dir, device_batches=True
            )
        through_lightning, module = lightning_steps_per_second(args, datamodule)
        print(f"lit-emergence (fit)  : {through_lightning:8.2f} steps/s ({fast_options(args)})")
        print(f"ratio lightning/eager: {through_lightning / eager:8.2f}x")
        outputs, loss = fast_probe_differences(module, datamodule)
        print(
            f"fast vs probe path after training, fp32: max |output diff| {outputs:.2e}, "
            f"|training-loss diff| {loss:.2e}"
        )


if __name__ == "__main__":
    main()
