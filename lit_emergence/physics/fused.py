"""Whole simulations in one GPU kernel: every frame and substep of a scene in registers.

The tensor code of :mod:`~lit_emergence.physics.simulator` launches about 30 small kernels per
integrator step, and on a GPU those launches, not the arithmetic, bound its speed (an eager
launch costs ~10 microseconds on an H100; a step of 4096 scenes x 32 discs is ~1e7 flops).
Here one Triton program owns one scene for the whole run: positions, velocities and
accelerations of its ``N`` discs stay in registers, each step evaluates the ``N x N`` pair
forces as a register tile and reduces it, and device memory is touched only to record frames.
Memory traffic per recorded frame is the frame itself plus its contact matrix, so the kernel is
bound by arithmetic.

It integrates the same equations as :func:`~lit_emergence.physics.simulator.advance`
(velocity Verlet with the dashpot fed the predicted velocity, or semi-implicit Euler), with the
same contact law (:mod:`~lit_emergence.physics.contact`), and records the same
:class:`~lit_emergence.physics.simulator.Trajectory`: frames, contacts of each interval (start
frame and every step) and total energy. It runs in float32 on CUDA; results agree with the
tensor path to float32 round-off (a chaotic system: trajectories separate slowly over long runs,
as two float32 runs with different summation orders do).

Requires Triton (shipped with CUDA builds of PyTorch). ``TRITON_INTERPRET=1`` runs it on the CPU
through Triton's interpreter, slowly, which is how it is tested without a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from lit_emergence.physics.config import SimulationConfig
from lit_emergence.physics.contact import component_major, damping_coefficient

try:  # Triton comes with CUDA builds of PyTorch; the package must import without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

__all__ = ["fused_available", "simulate_fused"]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fused_available(device: torch.device | str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`simulate_fused` can run here.

    Args:
        device: Device the simulation would run on.
        dtype: Dtype of the simulation (the kernel is float32 only).

    Returns:
        True for float32 on CUDA with Triton installed (or on any device under
        ``TRITON_INTERPRET=1``).

    """
    device = torch.device(device)
    if dtype != torch.float32 or triton is None:
        return False
    return device.type == "cuda" or _interpreting()


if triton is not None:

    @triton.jit
    def _wall_overlaps(x, y, scaled_radius, stiffness, box_width, box_height):
        # k max(delta, 0) with the walls at x = 0, x = W, y = 0, y = H
        left = tl.maximum(scaled_radius - stiffness * x, 0.0)
        right = tl.maximum(stiffness * x + scaled_radius - stiffness * box_width, 0.0)
        floor = tl.maximum(scaled_radius - stiffness * y, 0.0)
        ceiling = tl.maximum(stiffness * y + scaled_radius - stiffness * box_height, 0.0)
        return left, right, floor, ceiling

    @triton.jit
    def _scene_accelerations(
        x, y, vx, vy, scaled_radius, inverse_mass, wall_damping, scaled_radius_sum,
        pair_damping, pair_valid, stiffness, gravity, box_width, box_height,
    ):  # fmt: skip
        # contact + gravity acceleration of each disc, and k max(delta, 0) of each pair
        dx = x[:, None] - x[None, :]  # x_i - x_j
        dy = y[:, None] - y[None, :]
        squared = dx * dx + dy * dy + 1e-30  # coincident discs: no force instead of NaN
        inverse = 1.0 / tl.sqrt(squared)
        overlap = tl.maximum(scaled_radius_sum - stiffness * (squared * inverse), 0.0)
        overlap = tl.where(pair_valid, overlap, 0.0)
        relative_x = vx[:, None] - vx[None, :]
        relative_y = vy[:, None] - vy[None, :]
        normal_speed = (relative_x * dx + relative_y * dy) * inverse
        damping = tl.where(overlap > 0.0, pair_damping, 0.0)
        magnitude = (overlap - damping * normal_speed) * inverse  # along the raw separation
        force_x = tl.sum(magnitude * dx, axis=1)
        force_y = tl.sum(magnitude * dy, axis=1)
        # walls: discs of infinite mass
        left, right, floor, ceiling = _wall_overlaps(
            x, y, scaled_radius, stiffness, box_width, box_height
        )
        force_x += left - tl.where(left > 0.0, wall_damping, 0.0) * vx
        force_x += -right - tl.where(right > 0.0, wall_damping, 0.0) * vx
        force_y += floor - tl.where(floor > 0.0, wall_damping, 0.0) * vy
        force_y += -ceiling - tl.where(ceiling > 0.0, wall_damping, 0.0) * vy
        return force_x * inverse_mass, force_y * inverse_mass - gravity, overlap

    @triton.jit
    def _scene_energy(
        x, y, vx, vy, mass, scaled_radius, overlap, valid, stiffness, gravity, box_width,
        box_height,
    ):  # fmt: skip
        # kinetic + gravitational + elastic energy of the scene (see simulator.total_energy)
        left, right, floor, ceiling = _wall_overlaps(
            x, y, scaled_radius, stiffness, box_width, box_height
        )
        walls = left * left + right * right + floor * floor + ceiling * ceiling
        per_disc = 0.5 * mass * (vx * vx + vy * vy) + mass * gravity * y
        per_disc += walls / (2.0 * stiffness)
        per_disc = tl.where(valid, per_disc, 0.0)
        pairs = tl.sum(tl.sum(overlap * overlap, axis=1), axis=0) / (4.0 * stiffness)
        return tl.sum(per_disc, axis=0) + pairs

    @triton.jit
    def _simulate_kernel(
        x_ptr, v_ptr, a_ptr, radius_ptr, mass_ptr,
        positions_ptr, velocities_ptr, contacts_ptr, energy_ptr,
        num_particles, num_frames, num_substeps,
        time_step, stiffness, damping_factor, gravity, box_width, box_height,
        HAS_ACCELERATION: tl.constexpr, VERLET: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        scene = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, BLOCK)
        valid = i < num_particles
        pair_valid = valid[:, None] & valid[None, :] & (i[:, None] != i[None, :])
        # component-major (B, 2, N) inputs: the x row, then the y row
        row = scene * 2 * num_particles
        # padding lanes sit mid-box at rest with zero radius: finite, touching nothing
        x = tl.load(x_ptr + row + i, mask=valid, other=0.5 * box_width)
        y = tl.load(x_ptr + row + num_particles + i, mask=valid, other=0.5 * box_height)
        vx = tl.load(v_ptr + row + i, mask=valid, other=0.0)
        vy = tl.load(v_ptr + row + num_particles + i, mask=valid, other=0.0)
        radius = tl.load(radius_ptr + scene * num_particles + i, mask=valid, other=0.0)
        mass = tl.load(mass_ptr + scene * num_particles + i, mask=valid, other=1.0)

        # per-scene constants of the contact law (contact.contact_parameters)
        scaled_radius = stiffness * radius
        scaled_radius_sum = stiffness * (radius[:, None] + radius[None, :])
        effective_mass = mass[:, None] * mass[None, :] / (mass[:, None] + mass[None, :])
        pair_damping = damping_factor * tl.sqrt(effective_mass)
        wall_damping = damping_factor * tl.sqrt(mass)
        inverse_mass = 1.0 / mass

        ax, ay, overlap = _scene_accelerations(
            x, y, vx, vy, scaled_radius, inverse_mass, wall_damping, scaled_radius_sum,
            pair_damping, pair_valid, stiffness, gravity, box_width, box_height,
        )  # fmt: skip
        if HAS_ACCELERATION:
            ax = tl.load(a_ptr + row + i, mask=valid, other=0.0)
            ay = tl.load(a_ptr + row + num_particles + i, mask=valid, other=-gravity)

        # (B, T, N, 2) frames; (B, T-1, N, N) contacts; (B, T) energy
        frame_stride = num_particles * 2
        out = scene * num_frames * frame_stride + i * 2
        tl.store(positions_ptr + out, x, mask=valid)
        tl.store(positions_ptr + out + 1, y, mask=valid)
        tl.store(velocities_ptr + out, vx, mask=valid)
        tl.store(velocities_ptr + out + 1, vy, mask=valid)
        total = _scene_energy(
            x, y, vx, vy, mass, scaled_radius, overlap, valid, stiffness, gravity, box_width,
            box_height,
        )  # fmt: skip
        tl.store(energy_ptr + scene * num_frames, total)

        half_dt = 0.5 * time_step
        half_dt_squared = 0.5 * time_step * time_step
        pair_index = i[:, None] * num_particles + i[None, :]
        contact_base = scene * (num_frames - 1) * num_particles * num_particles
        for frame in range(1, num_frames):
            touched = overlap > 0.0  # the interval's start frame counts
            for _ in range(num_substeps):
                if VERLET:
                    x += time_step * vx + half_dt_squared * ax
                    y += time_step * vy + half_dt_squared * ay
                    half_vx = vx + half_dt * ax
                    half_vy = vy + half_dt * ay
                    # the dashpot sees the predicted velocity v + dt a
                    ax, ay, overlap = _scene_accelerations(
                        x, y, half_vx + half_dt * ax, half_vy + half_dt * ay, scaled_radius,
                        inverse_mass, wall_damping, scaled_radius_sum, pair_damping, pair_valid,
                        stiffness, gravity, box_width, box_height,
                    )  # fmt: skip
                    vx = half_vx + half_dt * ax
                    vy = half_vy + half_dt * ay
                else:
                    vx += time_step * ax
                    vy += time_step * ay
                    x += time_step * vx
                    y += time_step * vy
                    ax, ay, overlap = _scene_accelerations(
                        x, y, vx, vy, scaled_radius, inverse_mass, wall_damping,
                        scaled_radius_sum, pair_damping, pair_valid, stiffness, gravity,
                        box_width, box_height,
                    )  # fmt: skip
                touched = touched | (overlap > 0.0)
            contact_offset = contact_base + (frame - 1) * num_particles * num_particles
            tl.store(
                contacts_ptr + contact_offset + pair_index,
                touched.to(tl.int8),
                mask=valid[:, None] & valid[None, :],
            )
            out_frame = out + frame * frame_stride
            tl.store(positions_ptr + out_frame, x, mask=valid)
            tl.store(positions_ptr + out_frame + 1, y, mask=valid)
            tl.store(velocities_ptr + out_frame, vx, mask=valid)
            tl.store(velocities_ptr + out_frame + 1, vy, mask=valid)
            total = _scene_energy(
                x, y, vx, vy, mass, scaled_radius, overlap, valid, stiffness, gravity,
                box_width, box_height,
            )  # fmt: skip
            tl.store(energy_ptr + scene * num_frames + frame, total)


def simulate_fused(
    positions: Tensor,
    velocities: Tensor,
    radii: Tensor,
    masses: Tensor,
    config: SimulationConfig,
    num_frames: int,
    accelerations: Tensor | None = None,
    num_warps: int = 4,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Simulate ``num_frames`` recorded frames of a batch of scenes in one kernel launch.

    Args:
        positions: ``(B, N, 2)`` float32 start positions.
        velocities: ``(B, N, 2)``.
        radii: ``(B, N)``.
        masses: ``(B, N)``.
        config: Settings (validated by the caller); ``time_step``, ``substeps``,
            ``integrator``, contact law, box and gravity are used.
        num_frames: Frames to record (>= 2), the start state included.
        accelerations: ``(B, N, 2)`` acceleration at the start state, or ``None`` to evaluate
            it (as :func:`~lit_emergence.physics.simulator.simulate` does).
        num_warps: Warps per scene program (a tuning knob; 4 suits 32 discs).

    Returns:
        ``(positions (B, T, N, 2), velocities (B, T, N, 2), contacts (B, T-1, N, N) bool,
        energy (B, T))`` as in :class:`~lit_emergence.physics.simulator.Trajectory`.

    Raises:
        RuntimeError: If the fused kernel cannot run here (see :func:`fused_available`).

    """
    if not fused_available(positions.device, positions.dtype):
        raise RuntimeError(
            f"the fused simulator needs float32 tensors on CUDA and Triton (got {positions.dtype}"
            f" on {positions.device}); use simulate(..., backend='torch')"
        )
    batch, num, _ = positions.shape
    device = positions.device

    x, v = component_major(positions), component_major(velocities)
    a = component_major(accelerations) if accelerations is not None else x  # x: unused pointer
    out_positions = positions.new_empty(batch, num_frames, num, 2)
    out_velocities = positions.new_empty(batch, num_frames, num, 2)
    contacts = torch.empty(batch, num_frames - 1, num, num, dtype=torch.int8, device=device)
    energy = positions.new_empty(batch, num_frames)
    block = max(16, 1 << (num - 1).bit_length())
    _simulate_kernel[(batch,)](
        x, v, a, radii.contiguous(), masses.contiguous(),
        out_positions, out_velocities, contacts, energy,
        num, num_frames, config.substeps,
        float(config.time_step), float(config.stiffness),
        float(damping_coefficient(config.stiffness, 1.0, config.restitution)),
        float(config.gravity), float(config.box_width), float(config.box_height),
        HAS_ACCELERATION=accelerations is not None, VERLET=config.integrator == "verlet",
        BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return out_positions, out_velocities, contacts.view(torch.bool), energy
