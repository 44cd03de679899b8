"""The fused (one Triton kernel) simulator against the tensor simulator and physics.

The fused kernel runs in float32. Its reference is the tensor path in float64 from the same start
state; its tolerance is set by the tensor path's own float32 run, since both make round-off of
the same size and the dynamics amplify it alike (granular flow is chaotic). On CUDA the tests run
directly; without a GPU, Triton's interpreter (``TRITON_INTERPRET=1``, in a subprocess because
Triton reads it at import) runs a small case when Triton is installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lit_emergence.physics import SimulationConfig, initial_state, simulate, step, total_energy
from lit_emergence.physics.fused import fused_available

needs_fused_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and fused_available("cuda")),
    reason="needs a CUDA device and Triton",
)


def config_for(num_particles: int, **overrides) -> SimulationConfig:
    columns = -(-num_particles // 8)
    settings = dict(
        num_particles=num_particles, box_width=3.0 * columns + 0.5, box_height=24.0, num_frames=40
    )
    settings.update(overrides)
    config = SimulationConfig(**settings)
    config.validate()
    return config


def errors_against_float64(config: SimulationConfig, scenes: int, device: str, frames: int):
    """Max position errors of fused-f32 and torch-f32 against torch-f64, and the three runs."""
    state = initial_state(config, scenes, generator=torch.Generator().manual_seed(7))
    state64 = type(state)(*(t.double() for t in (state.positions, state.velocities,
                                                  state.radii, state.masses)))  # fmt: skip
    reference = simulate(config, scenes, initial=state64, num_frames=frames, backend="torch")
    on_device = type(state)(*(t.to(device) for t in (state.positions, state.velocities,
                                                      state.radii, state.masses)))  # fmt: skip
    fused = simulate(config, scenes, initial=on_device, num_frames=frames, backend="fused")
    tensor = simulate(config, scenes, initial=state, num_frames=frames, backend="torch")
    fused_error = (fused.positions.cpu().double() - reference.positions).abs().max().item()
    tensor_error = (tensor.positions.double() - reference.positions).abs().max().item()
    return fused_error, tensor_error, fused, tensor, reference


def energy_error_of_own_states(trajectory, state, config) -> float:
    """Relative error of the recorded energy against total_energy of the recorded states."""
    radii, masses = state.radii.double().to("cpu"), state.masses.double().to("cpu")
    worst = 0.0
    for frame in range(trajectory.positions.shape[1]):
        expected = total_energy(
            trajectory.positions[:, frame].cpu().double(),
            trajectory.velocities[:, frame].cpu().double(),
            radii, masses, config,
        )  # fmt: skip
        error = (trajectory.energy[:, frame].cpu().double() - expected).abs() / expected.abs()
        worst = max(worst, error.max().item())
    return worst


@needs_fused_cuda
@pytest.mark.parametrize("integrator", ["verlet", "euler"])
@pytest.mark.parametrize("num_particles", [32, 20])  # 20: padded lanes (block of 32)
def test_fused_matches_float64_like_the_tensor_path(integrator, num_particles):
    config = config_for(num_particles, integrator=integrator)
    # 6 frames (60 steps): long enough for many contacts, short enough that the chaotic
    # amplification of round-off stays far below the size of a disc
    fused_error, tensor_error, fused, _, reference = errors_against_float64(
        config, 64, "cuda", frames=6
    )
    # Same-size float32 round-off, amplified alike: within 10x of the tensor path's error, and
    # a floor of 1e-4 (discs have radius ~1) for when the tensor path happens to be very close.
    assert fused_error <= max(10 * tensor_error, 1e-4), (fused_error, tensor_error)
    # Contacts: a pair at the edge of touching may flip under round-off; allow 0.1 % of records.
    disagreement = (fused.contacts.cpu() != reference.contacts).float().mean().item()
    assert disagreement <= 1e-3
    assert reference.contacts.any()
    # The recorded energy is that of the recorded state: float32 sums of ~N terms of O(10).
    assert energy_error_of_own_states(fused, fused, config) < 1e-5
    assert fused.positions.device.type == "cuda" and fused.contacts.dtype == torch.bool


@needs_fused_cuda
def test_fused_is_the_default_on_cuda_and_conserves_elastic_energy():
    # restitution 1 and no gravity loss: a closed elastic system, energy conserved to O(dt^2)
    config = config_for(32, restitution=1.0, num_frames=60)
    state = initial_state(config, 128, generator=torch.Generator().manual_seed(3), device="cuda")
    auto = simulate(config, 128, initial=state)
    fused = simulate(config, 128, initial=state, backend="fused")
    torch.testing.assert_close(auto.positions, fused.positions, rtol=0, atol=0)
    drift = (fused.energy - fused.energy[:, :1]).abs().max() / fused.energy.abs().max()
    # The tensor path's float64 tests show O(dt^2) ~1e-4 wobble at this step; float32 adds ~1e-6.
    assert drift.item() < 2e-3


@needs_fused_cuda
def test_fused_starts_from_given_accelerations():
    # continue from a state that carries its acceleration (as a resumed simulation does)
    config = config_for(32)
    state = initial_state(config, 16, generator=torch.Generator().manual_seed(5), device="cuda")
    stepped, _ = step(state, config)
    assert stepped.accelerations is not None
    torch_next = simulate(config, 16, initial=stepped, num_frames=4, backend="torch")
    fused_next = simulate(config, 16, initial=stepped, num_frames=4, backend="fused")
    torch.testing.assert_close(fused_next.positions, torch_next.positions, rtol=0, atol=1e-4)


def test_backend_errors_are_one_line():
    config = config_for(8, num_frames=3)
    state = initial_state(config, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="backend='warp' is unknown"):
        simulate(config, 2, initial=state, backend="warp")
    state64 = type(state)(*(t.double() for t in (state.positions, state.velocities,
                                                  state.radii, state.masses)))  # fmt: skip
    with pytest.raises(RuntimeError, match="backend='torch'") as error:
        simulate(config, 2, initial=state64, backend="fused")  # float64 is never fused
    assert "\n" not in str(error.value)
    # auto on the CPU is the tensor path
    auto = simulate(config, 2, initial=state)
    torch.testing.assert_close(
        auto.positions, simulate(config, 2, initial=state, backend="torch").positions
    )


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tests run the compiled kernel")
def test_interpreted_kernel_matches_float64():
    script = textwrap.dedent(
        """
        from test_fused_simulator import config_for, energy_error_of_own_states
        from test_fused_simulator import errors_against_float64
        for integrator in ("verlet", "euler"):
            config = config_for(12, integrator=integrator)
            fused, tensor, f, _, ref = errors_against_float64(config, 2, "cpu", frames=6)
            assert fused <= max(10 * tensor, 1e-4), (integrator, fused, tensor)
            assert bool((f.contacts == ref.contacts).all())
            assert energy_error_of_own_states(f, f, config) < 1e-5
        print("ok")
        """
    )
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__), environment.get("PYTHONPATH", "")]
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
