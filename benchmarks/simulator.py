"""Throughput of the batched torch simulator against a per-scene NumPy implementation.

Measures particle-steps per second (scenes x particles x integrator steps / wall time) of
``lit_emergence.physics.simulate`` (the real code path: start states, contact constants, the
per-frame ``advance`` hot loop, recording of frames, contacts and energy) and of a
straightforward NumPy all-pairs simulator of the same physics that loops over scenes, side by
side in one run, and prints the ratio. Before timing, both simulate one scene in float64 and
must agree to 1e-9.

Examples::

    python benchmarks/simulator.py                          # CPU, 256 scenes x 32 discs
    python benchmarks/simulator.py --scenes 1024 --frames 21
    python benchmarks/simulator.py --device cuda --scenes 4096 --compile --cuda-graph
    python benchmarks/simulator.py --device cuda --scenes 16384 --compile --cuda-graph

On CUDA the eager tensor path (``simulate(backend="torch")``) is always timed, and the fused
kernel (``lit_emergence.physics.fused``: the whole run in one Triton launch, what ``simulate``
uses on CUDA by default) whenever Triton is there. ``--compile`` adds ``torch.compile`` of the
per-frame ``advance`` (``workspace=None``, so inductor fuses the pair temporaries), and
``--cuda-graph`` captures one frame of ``advance`` (eager with a workspace, or the compiled
function with ``--compile``) in a CUDA graph and replays it per frame. Those variants record
positions, velocities and contacts per frame like ``simulate`` and are checked against it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from lit_emergence.physics import ParticleState, SimulationConfig, initial_state, simulate
from lit_emergence.physics.contact import component_major, contact_accelerations, contact_parameters
from lit_emergence.physics.fused import fused_available, simulate_fused
from lit_emergence.physics.simulator import advance
from lit_emergence.physics.workspace import Workspace

# ---------------------------------------------------------------------------------------------
# The reference: one scene at a time, the formulas of docs/physics.md written out directly.
# ---------------------------------------------------------------------------------------------


def numpy_damping(stiffness: float, effective_mass: np.ndarray, restitution: float) -> np.ndarray:
    """Dashpot c = -2 ln(e) sqrt(m* k) / sqrt(pi^2 + ln(e)^2)."""
    log_e = math.log(restitution)
    return -2 * log_e * np.sqrt(effective_mass * stiffness) / math.sqrt(math.pi**2 + log_e**2)


class NumpyScene:
    """Straightforward all-pairs spring-dashpot simulator of one scene in NumPy."""

    def __init__(self, radii: np.ndarray, masses: np.ndarray, config: SimulationConfig):
        self.config = config
        self.radii, self.masses = radii, masses
        effective_mass = np.outer(masses, masses) / (masses[:, None] + masses[None, :])
        self.pair_damping = numpy_damping(config.stiffness, effective_mass, config.restitution)
        self.wall_damping = numpy_damping(config.stiffness, masses, config.restitution)
        self.contact_distance = radii[:, None] + radii[None, :]

    def accelerations(self, x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Accelerations (N, 2) and touching pairs (N, N) at positions x with velocities v."""
        k, config = self.config.stiffness, self.config
        separation = x[:, None, :] - x[None, :, :]  # (N, N, 2)
        distance = np.sqrt((separation**2).sum(-1))
        np.fill_diagonal(distance, np.inf)
        overlap = self.contact_distance - distance
        touching = overlap > 0
        normal = separation / distance[..., None]
        normal_speed = ((v[:, None, :] - v[None, :, :]) * normal).sum(-1)
        magnitude = np.where(touching, k * overlap - self.pair_damping * normal_speed, 0.0)
        force = (magnitude[..., None] * normal).sum(1)
        for axis, length in ((0, config.box_width), (1, config.box_height)):
            low = self.radii - x[:, axis]  # overlap with the wall at 0
            high = x[:, axis] + self.radii - length  # overlap with the wall at `length`
            force[:, axis] += np.where(low > 0, k * low - self.wall_damping * v[:, axis], 0.0)
            force[:, axis] += np.where(high > 0, -k * high - self.wall_damping * v[:, axis], 0.0)
        acceleration = force / self.masses[:, None]
        acceleration[:, 1] -= config.gravity
        return acceleration, touching

    def run(self, x: np.ndarray, v: np.ndarray, num_frames: int) -> tuple[np.ndarray, ...]:
        """Velocity Verlet (dashpot sees v + dt a); positions, velocities (T, N, 2), contacts."""
        config = self.config
        dt, substeps = config.time_step, config.substeps
        positions = np.empty((num_frames, *x.shape), x.dtype)
        velocities = np.empty_like(positions)
        contacts = np.empty((num_frames - 1, len(x), len(x)), bool)
        acceleration, touching = self.accelerations(x, v)
        positions[0], velocities[0] = x, v
        for frame in range(1, num_frames):
            touched = touching
            for _ in range(substeps):
                x = x + dt * v + 0.5 * dt * dt * acceleration
                half = v + 0.5 * dt * acceleration
                acceleration, touching = self.accelerations(x, v + dt * acceleration)
                v = half + 0.5 * dt * acceleration
                touched = touched | touching
            positions[frame], velocities[frame], contacts[frame - 1] = x, v, touched
        return positions, velocities, contacts


def numpy_simulate(state: ParticleState, config: SimulationConfig, num_frames: int):
    """Loop over scenes; returns positions (B, T, N, 2) and contacts (B, T-1, N, N) arrays."""
    numpy_state = [getattr(state, name).cpu().numpy() for name in ("positions", "velocities")]
    radii, masses = state.radii.cpu().numpy(), state.masses.cpu().numpy()
    results = []
    for scene in range(len(radii)):
        simulator = NumpyScene(radii[scene], masses[scene], config)
        results.append(simulator.run(numpy_state[0][scene], numpy_state[1][scene], num_frames))
    positions = np.stack([positions for positions, _, _ in results])
    return positions, np.stack([contacts for _, _, contacts in results])


# ---------------------------------------------------------------------------------------------
# Torch variants for CUDA: compiled and graph-replayed frames of the package's `advance`.
# ---------------------------------------------------------------------------------------------


def frame_runner(
    state: ParticleState, config: SimulationConfig, compile_mode: str | None, cuda_graph: bool
) -> Callable[[int], torch.Tensor]:
    """Build a function that simulates ``num_frames`` frames and returns positions (B, T, N, 2).

    Mirrors :func:`simulate` (records positions, velocities and contacts each frame) with the
    per-frame ``advance`` compiled and/or replayed from a CUDA graph.
    """
    params = contact_parameters(state.radii, state.masses, config)
    workspace = None if compile_mode else Workspace()

    def one_frame(x, v, a, overlap):
        return advance(
            x, v, a, params, config.time_step, config.substeps, config.integrator,
            start_overlap=overlap, workspace=workspace,
        )  # fmt: skip

    if compile_mode:
        one_frame = torch.compile(one_frame, mode=compile_mode, fullgraph=True)
    x0, v0 = component_major(state.positions), component_major(state.velocities)
    a0, overlap0 = contact_accelerations(x0, v0, params)
    static = [t.clone() for t in (x0, v0, a0, overlap0)]  # x, v, a, overlap (graph inputs)
    touched = torch.empty_like(overlap0)

    def frame_into_static() -> None:
        x, v, a, overlap, frame_touched = one_frame(*static)
        for target, value in zip(
            [*static, touched], (x, v, a, overlap, frame_touched), strict=True
        ):
            target.copy_(value)

    advance_frame = frame_into_static
    if cuda_graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up (and trigger compilation) outside the capture
                frame_into_static()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            frame_into_static()
        advance_frame = graph.replay

    def run(num_frames: int) -> torch.Tensor:
        for target, value in zip(static, (x0, v0, a0, overlap0), strict=True):
            target.copy_(value)
        batch, _, num = x0.shape
        positions = x0.new_empty(batch, num_frames, num, 2)
        velocities = x0.new_empty(batch, num_frames, num, 2)
        contacts = torch.empty(batch, num_frames - 1, num, num, dtype=torch.bool, device=x0.device)
        positions[:, 0], velocities[:, 0] = static[0].transpose(1, 2), static[1].transpose(1, 2)
        for frame in range(1, num_frames):
            advance_frame()
            positions[:, frame] = static[0].transpose(1, 2)
            velocities[:, frame] = static[1].transpose(1, 2)
            contacts[:, frame - 1] = touched > 0
        return positions

    return run


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def benchmark_config(args: argparse.Namespace) -> SimulationConfig:
    """Default physics in a box wide enough for the discs (8 lattice rows, width not whole)."""
    columns = math.ceil(args.particles / 8)
    return SimulationConfig(
        num_particles=args.particles, box_width=3.0 * columns + 0.5, box_height=24.0,
        substeps=args.substeps, num_frames=args.frames,
    )  # fmt: skip


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, synchronising CUDA before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def sanity_check(config: SimulationConfig, frames: int) -> tuple[float, int, bool]:
    """Compare torch and NumPy on one float64 scene.

    Returns:
        Max position difference (must be < 1e-9), number of contact records (pairs x frames)
        and whether the contact records agree.

    """
    generator = torch.Generator().manual_seed(1)
    state = initial_state(config, 1, generator=generator, dtype=torch.float64)
    trajectory = simulate(config, 1, initial=state, num_frames=frames, backend="torch")
    positions, contacts = numpy_simulate(state, config, frames)
    difference = float(np.abs(trajectory.positions.numpy() - positions).max())
    same_contacts = bool((trajectory.contacts.numpy() == contacts).all())
    return difference, int(contacts.sum()) // 2, same_contacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=256, help="batch of scenes for torch")
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--frames", type=int, default=21, help="recorded frames (T)")
    parser.add_argument("--substeps", type=int, default=10, help="integrator steps per frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--numpy-scenes", type=int, default=16,
        help="scenes for the NumPy loop (its cost is linear in scenes; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--compile", nargs="?", const="default", default=None,
        help="also time torch.compile of the per-frame advance (optional mode, e.g. "
        "max-autotune-no-cudagraphs; with --cuda-graph use a mode without CUDA graphs)",
    )  # fmt: skip
    parser.add_argument("--cuda-graph", action="store_true", help="also time CUDA-graph replay")
    parser.add_argument(
        "--fused-warps", type=int, nargs="+", default=[4],
        help="warps per scene program of the fused kernel (timed where it runs: CUDA + Triton)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = benchmark_config(args)
    config.validate()
    steps = (args.frames - 1) * args.substeps
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device={device} ({where}; torch uses {torch.get_num_threads()} CPU threads)"
        f" dtype={args.dtype} torch={torch.__version__}"
    )
    print(
        f"scenes={args.scenes} particles={args.particles} frames={args.frames} "
        f"substeps={args.substeps} ({steps} steps, dt={config.time_step:.4g})"
    )

    difference, num_contacts, same_contacts = sanity_check(config, frames=41)
    verdict = "OK" if difference < 1e-9 and same_contacts else "MISMATCH"
    print(
        f"sanity: torch vs NumPy, one float64 scene, 40 frames, {num_contacts} pair-frame"
        f" contacts: max |dx| = {difference:.2e}, same contacts: {same_contacts} ({verdict})"
    )

    generator = torch.Generator().manual_seed(0)
    state = initial_state(config, args.scenes, generator=generator, device=device, dtype=dtype)
    simulate(config, args.scenes, initial=state, num_frames=2, backend="torch")  # warm up
    best = min(
        timed(lambda: simulate(config, args.scenes, initial=state, backend="torch"), device)
        for _ in range(args.repeats)
    )
    torch_rate = args.scenes * args.particles * steps / best
    print(f"torch simulate (eager):   {torch_rate:10.3e} particle-steps/s  ({best:.3f} s)")
    rates = {"eager": torch_rate}

    if fused_available(device, dtype):
        reference = simulate(config, args.scenes, initial=state, backend="torch")
        for warps in args.fused_warps:

            def run_fused(warps=warps):
                return simulate_fused(
                    state.positions, state.velocities, state.radii, state.masses, config,
                    args.frames, num_warps=warps,
                )  # fmt: skip

            positions = run_fused()[0]  # compiles the kernel
            error = (positions - reference.positions).abs().max().item()
            early = (positions[:, :3] - reference.positions[:, :3]).abs().max().item()
            seconds = min(timed(run_fused, device) for _ in range(args.repeats))
            rate = args.scenes * args.particles * steps / seconds
            rates[f"fused[{warps} warps]"] = rate
            print(
                f"fused kernel, {warps} warps:   {rate:10.3e} particle-steps/s  ({seconds:.4f} s;"
                f" max |x - eager| {early:.1e} over 2 frames, {error:.1e} over all)"
            )
    elif device.type == "cuda":
        print("fused kernel: not available (needs Triton and float32)")

    variants = []
    if args.compile:
        variants.append((f"compile[{args.compile}]", args.compile, False))
    if args.cuda_graph:
        variants.append(("cuda-graph" + (" + compile" if args.compile else ""),
                         args.compile, True))  # fmt: skip
    if variants:
        reference = simulate(config, args.scenes, initial=state, backend="torch").positions
    for name, compile_mode, graph in variants:
        runner = frame_runner(state, config, compile_mode, graph)
        positions = runner(args.frames)  # also warms up
        error = (positions - reference).abs().max().item()
        best_variant = min(timed(lambda r=runner: r(args.frames), device) for _ in range(3))
        rate = args.scenes * args.particles * steps / best_variant
        rates[name] = rate
        print(
            f"torch {name + ':':19} {rate:10.3e} particle-steps/s  ({best_variant:.3f} s;"
            f" max |x - eager| = {error:.1e})"
        )

    if args.numpy_scenes > 0:
        numpy_state = initial_state(config, args.numpy_scenes, generator=generator, dtype=dtype)
        numpy_state = ParticleState(*(t.cpu() for t in (
            numpy_state.positions, numpy_state.velocities, numpy_state.radii, numpy_state.masses
        )))  # fmt: skip
        elapsed = timed(
            lambda: numpy_simulate(numpy_state, config, args.frames), torch.device("cpu")
        )
        numpy_rate = args.numpy_scenes * args.particles * steps / elapsed
        print(
            f"NumPy per-scene loop:     {numpy_rate:10.3e} particle-steps/s  ({elapsed:.3f} s"
            f" for {args.numpy_scenes} scenes, one CPU thread)"
        )
        for name, rate in rates.items():
            print(f"speed-up torch {name} / NumPy: {rate / numpy_rate:.1f}x")


if __name__ == "__main__":
    main()
