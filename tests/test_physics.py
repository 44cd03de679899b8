"""Physical checks of the soft-sphere simulator (equations in docs/physics.md), in float64.

Tolerances are derived in the comments. Two recurring quantities:

- ``dt / t_c``: the default step is a thirtieth of the shortest pair contact; a wall contact
  (effective mass ``m`` instead of ``m/2``) lasts ``sqrt(2)`` times longer.
- ``c dt / m* = -2 ln(e) dt / t_c``: the velocity kick the dashpot gives in one step. The dashpot
  switches on and off between two steps, so the exit speed of a collision carries a
  phase-dependent error of up to about this size (first order in ``dt``).
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_emergence.physics import (
    ParticleState,
    SimulationConfig,
    contact_forces,
    initial_state,
    simulate,
    step,
    total_energy,
)
from lit_emergence.physics.config import contact_duration
from lit_emergence.physics.contact import damping_coefficient

F64 = torch.float64


def make_state(positions, velocities, radii=None, masses=None) -> ParticleState:
    """A float64 state from nested lists shaped (B, N, 2); radii and masses default to 1."""
    positions = torch.tensor(positions, dtype=F64)
    velocities = torch.tensor(velocities, dtype=F64)
    shape = positions.shape[:2]
    radii = torch.ones(shape, dtype=F64) if radii is None else torch.tensor(radii, dtype=F64)
    masses = torch.ones(shape, dtype=F64) if masses is None else torch.tensor(masses, dtype=F64)
    return ParticleState(positions, velocities, radii, masses)


def falling_discs(config: SimulationConfig, num_frames: int):
    """Two scenes of two discs far from each other and from the walls, thrown in free fall."""
    state = make_state(
        [[[10.0, 60.0], [30.0, 70.0]], [[20.0, 50.0], [40.0, 80.0]]],
        [[[0.5, 2.0], [-1.0, 0.0]], [[0.0, -1.5], [0.3, 3.0]]],
    )
    trajectory = simulate(config, 2, initial=state, num_frames=num_frames)
    times = torch.arange(num_frames, dtype=F64) * config.frame_interval
    exact_y = (
        state.positions[:, None, :, 1]
        + state.velocities[:, None, :, 1] * times[None, :, None]
        - 0.5 * config.gravity * times[None, :, None] ** 2
    )
    exact_x = (
        state.positions[:, None, :, 0] + state.velocities[:, None, :, 0] * times[None, :, None]
    )
    return trajectory, exact_x, exact_y, times


def test_free_fall_verlet_is_exact():
    # Velocity Verlet integrates constant acceleration exactly; what remains is float64
    # round-off accumulated over 400 steps on coordinates of size ~100: 400 * 1e-16 * 100 ~ 4e-12.
    config = SimulationConfig(num_particles=2, box_width=50.0, box_height=100.0, substeps=20)
    trajectory, exact_x, exact_y, _ = falling_discs(config, num_frames=21)
    assert not trajectory.contacts.any()
    torch.testing.assert_close(trajectory.positions[..., 1], exact_y, rtol=0, atol=1e-10)
    torch.testing.assert_close(trajectory.positions[..., 0], exact_x, rtol=0, atol=1e-10)
    # Free flight conserves energy exactly up to round-off (energies ~ 100).
    torch.testing.assert_close(
        trajectory.energy,
        trajectory.energy[:, :1].expand_as(trajectory.energy),
        rtol=1e-12,
        atol=0,
    )


def test_free_fall_semi_implicit_euler_error():
    # Semi-implicit Euler: v_n = v0 - g n dt exactly, x_n = x0 + dt sum_{k<=n} v_k
    # = x0 + v0 t - g t^2/2 - g dt t/2. The error -(1/2) g dt t is exact up to round-off.
    config = SimulationConfig(
        num_particles=2, box_width=50.0, box_height=100.0, substeps=20, integrator="euler"
    )
    trajectory, exact_x, exact_y, times = falling_discs(config, num_frames=21)
    error = trajectory.positions[..., 1] - exact_y
    expected = -0.5 * config.gravity * config.time_step * times[None, :, None].expand_as(error)
    torch.testing.assert_close(error, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(trajectory.positions[..., 0], exact_x, rtol=0, atol=1e-10)


def test_damping_and_contact_duration_match_reference():
    stiffness, effective_mass = 100.0, 0.5
    for restitution in (0.2, 0.6, 0.95):
        c = damping_coefficient(stiffness, effective_mass, restitution)
        log_e = math.log(restitution)
        assert c == pytest.approx(
            -2 * log_e * math.sqrt(effective_mass * stiffness) / math.sqrt(math.pi**2 + log_e**2),
            rel=1e-14,
        )
        omega_d = math.sqrt(stiffness / effective_mass - (c / (2 * effective_mass)) ** 2)
        t_c = contact_duration(stiffness, effective_mass, restitution)
        assert t_c == pytest.approx(math.pi / omega_d, rel=1e-12)
        # The damped oscillator leaves the contact after half a period with its speed reduced
        # by exp(-c t_c / (2 m*)): that is e, the defining property of c.
        assert math.exp(-c * t_c / (2 * effective_mass)) == pytest.approx(restitution, rel=1e-12)
    assert damping_coefficient(stiffness, effective_mass, 1.0) == 0.0
    # Tensor effective masses give the same values elementwise.
    masses = torch.tensor([0.25, 0.5, 2.0], dtype=F64)
    torch.testing.assert_close(
        damping_coefficient(stiffness, masses, 0.6),
        torch.tensor([damping_coefficient(stiffness, float(m), 0.6) for m in masses], dtype=F64),
    )
    # The default config (k = 100, m* = 1/2, e = 0.6): t_c ~ 0.225, dt = t_c/30.
    config = SimulationConfig()
    assert config.contact_duration == pytest.approx(0.2251, abs=1e-4)
    assert config.time_step == pytest.approx(config.contact_duration / 30)
    assert config.frame_interval == pytest.approx(config.time_step * config.substeps)


def test_rebound_height_is_restitution_squared():
    # k = 1e5, m = g = R = 1: mg/(kR) = 1e-5 << 1e-3, so the floor sags by a negligible 1e-5.
    # The exit speed carries the dashpot switch-off error, at most c_wall dt / m
    # = -2 ln(e) dt / t_c_wall = 2 * 0.51 / (30 * sqrt 2) = 2.4 % for e = 0.6, i.e. 4.8 % in
    # height (measured max 1.9 %). 16 drop heights sample the phase of the contact within a
    # step; their average is free of that first-order, phase-dependent part and keeps only the
    # O(dt^2) error and the small effect of gravity during the 0.01-long contact: allow 1 %
    # (measured 0.6 %).
    restitution = 0.6
    config = SimulationConfig(
        num_particles=1,
        box_width=4.0,
        box_height=10.0,
        stiffness=1e5,
        restitution=restitution,
        substeps=10,
    )
    assert config.mass * config.gravity / (config.stiffness * config.radius) < 1e-4
    scenes = 16
    heights = 1.0 + torch.linspace(0.0, 0.05, scenes, dtype=F64)  # gap below the disc
    positions = torch.stack([torch.full_like(heights, 2.0), config.radius + heights], -1)
    state = ParticleState(
        positions[:, None],
        torch.zeros(scenes, 1, 2, dtype=F64),
        torch.ones(scenes, 1, dtype=F64),
        torch.ones(scenes, 1, dtype=F64),
    )
    # The fall takes sqrt(2h) <= 1.45, the rebound to e^2 h another e sqrt(2h) <= 0.87.
    num_frames = int(2.5 / config.frame_interval)
    trajectory = simulate(config, scenes, initial=state, num_frames=num_frames)
    gap = trajectory.positions[:, :, 0, 1] - config.radius  # (B, T)
    impact = gap[:, : int(1.6 / config.frame_interval)].argmin(1)
    after_impact = torch.arange(num_frames)[None] > impact[:, None]
    apex = torch.where(after_impact, gap, -1.0).max(1).values
    ratio = apex / (restitution**2 * heights)
    switch_error = (
        -2 * math.log(restitution) * config.time_step / (config.contact_duration * math.sqrt(2))
    )
    assert (ratio - 1).abs().max() < 2 * switch_error
    assert abs(ratio.mean() - 1) < 0.01


def head_on(restitution: float, steps_per_contact: int, gaps: torch.Tensor):
    """Relative exit speed / entry speed of equal discs colliding head-on, one scene per gap."""
    config = SimulationConfig(
        num_particles=2,
        box_width=40.0,
        box_height=20.0,
        gravity=0.0,
        restitution=restitution,
        substeps=1,
    )
    config.dt = config.contact_duration / steps_per_contact
    scenes = len(gaps)
    positions = torch.zeros(scenes, 2, 2, dtype=F64)
    positions[:, 0, 0], positions[:, 1, 0], positions[..., 1] = 17.0 - gaps, 23.0, 10.0
    velocities = torch.zeros(scenes, 2, 2, dtype=F64)
    velocities[:, 0, 0], velocities[:, 1, 0] = 1.0, -1.0
    state = ParticleState(
        positions, velocities, torch.ones(scenes, 2, dtype=F64), torch.ones(scenes, 2, dtype=F64)
    )
    # Contact after at most 2.5 time units; it lasts t_c ~ 0.23.
    trajectory = simulate(config, scenes, initial=state, num_frames=int(3.5 / config.dt))
    assert trajectory.contacts[:, :, 0, 1].any(1).all()
    final = trajectory.velocities[:, -1]
    exit_speed = final[:, 1, 0] - final[:, 0, 0]
    return trajectory, exit_speed / 2.0  # entry relative speed is 2


def test_head_on_collision_momentum_and_restitution():
    gaps = torch.linspace(0.0, 1.0, 4, dtype=F64)  # different contact phases within a step
    trajectory, ratio = head_on(0.6, 30, gaps)
    # Pair forces are antisymmetric bit for bit (x_i - x_j = -(x_j - x_i) exactly), so the
    # total momentum (zero here) stays zero to round-off.
    momentum = (trajectory.masses[:, None, :, None] * trajectory.velocities).sum(2)
    assert momentum.abs().max() < 1e-12
    # The exit speed is e times the entry speed. Measured error -0.33 % at dt = t_c/30; the
    # first-order switch error c dt / m* = -2 ln(0.6)/30 = 3.4 % bounds it from above, and the
    # prediction of the dashpot velocity makes the rest O((dt/t_c)^2) ~ 1e-3: allow 1 %.
    assert (ratio / 0.6 - 1).abs().max() < 0.01
    # Halving dt must shrink the error (second order: about 4x; demand 2x).
    _, finer = head_on(0.6, 60, gaps)
    assert (finer / 0.6 - 1).abs().max() < (ratio / 0.6 - 1).abs().max() / 2


def test_elastic_gas_conserves_energy_to_second_order():
    # e = 1, no gravity: the energy only wobbles with the O(dt^2) error of Verlet during contacts
    # (the spring is evaluated at discrete steps). Same recorded times for both step sizes.
    def relative_deviation(steps_per_contact: int, substeps: int) -> torch.Tensor:
        config = SimulationConfig(
            num_particles=12,
            box_width=11.0,
            box_height=12.0,
            gravity=0.0,
            restitution=1.0,
            substeps=substeps,
        )
        config.dt = config.contact_duration / steps_per_contact
        generator = torch.Generator().manual_seed(1)
        trajectory = simulate(config, 8, generator=generator, dtype=F64, num_frames=101)
        energy = trajectory.energy
        assert trajectory.contacts.any(), "the gas must collide to test anything"
        return (energy - energy[:, :1]) / energy[:, :1]  # (B, T)

    coarse, fine = relative_deviation(30, 10), relative_deviation(60, 20)
    # Measured max 1.6e-3 at dt = t_c/30 over ~150 collisions per scene, and O(dt^2) means
    # halving dt divides it by ~4 (measured 4.4; 3 to 6 leaves room for the different collision
    # sequences of the two runs).
    assert coarse.abs().max() < 5e-3
    assert 3.0 < coarse.abs().max() / fine.abs().max() < 6.0
    # No drift: the late mean deviation is a small fraction of the wobble (measured 3 %).
    assert coarse[:, 50:].mean().abs() < 0.2 * coarse.abs().max()


def test_settled_pile_rests_on_the_floor():
    # 12 discs in a 9.5-wide box under gravity settle into a pile (e = 0.3 settles in ~100 time
    # units; measured kinetic energy <= 2e-15 after 127). At rest the floor carries the weight:
    # the residual, sum m a_y, is of the order of the contact frequency times the momentum of
    # the remaining motion, sqrt(2k/m) sqrt(2 M K) ~ 14 * 2.4e-7 ~ 3e-6, i.e. 3e-7 of the
    # weight (measured 1e-10); allow 1e-6.
    config = SimulationConfig(
        num_particles=12,
        box_width=9.5,
        box_height=12.0,
        restitution=0.3,
        substeps=50,
        init_speed=0.5,
    )
    generator = torch.Generator().manual_seed(0)
    trajectory = simulate(config, 2, generator=generator, dtype=F64, num_frames=321)
    kinetic = 0.5 * (trajectory.masses[:, None] * trajectory.velocities.square().sum(-1)).sum(-1)
    assert (kinetic[:, -1] < 1e-9 * kinetic[:, 0]).all()
    assert trajectory.contacts[:, -1].any((1, 2)).all(), "a pile has persistent contacts"
    forces = contact_forces(
        trajectory.positions[:, -1],
        trajectory.velocities[:, -1],
        trajectory.radii,
        trajectory.masses,
        config,
    )
    weight = trajectory.masses.sum(1) * config.gravity
    torch.testing.assert_close(forces.wall_forces[:, 2, 1], weight, rtol=1e-6, atol=0)
    # The side walls push equally (no net horizontal force); nothing touches the ceiling.
    torch.testing.assert_close(
        forces.wall_forces[:, 0, 0], -forces.wall_forces[:, 1, 0], rtol=0, atol=1e-6
    )
    assert (forces.wall_forces[:, 3] == 0).all()
    # Energy was only lost: E(t) never rises by more than the O(dt^2) integration wobble of the
    # springs (~1e-3 of a collision's energy; measured rises <= 2e-13).
    assert (trajectory.energy.diff(dim=1) < 1e-3).all()


def test_contact_inside_one_frame_interval_is_recorded():
    # A frame interval of 100 steps ~ 3.3 t_c: two discs 0.5 apart closing at speed 2 touch
    # after 0.25, separate after ~0.48 and are apart again at both recorded frames.
    config = SimulationConfig(
        num_particles=3, box_width=20.0, box_height=10.0, gravity=0.0, substeps=100
    )
    state = make_state(
        [[[9.0, 5.0], [11.5, 5.0], [16.0, 5.0]]], [[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]]
    )
    trajectory = simulate(config, 1, initial=state, num_frames=3)
    ends = trajectory.positions[0, :2]  # frames 0 and 1
    distance = (ends[:, 0] - ends[:, 1]).norm(dim=-1)
    assert (distance > 2.0).all(), "the contact must fall strictly inside the interval"
    expected = torch.zeros(3, 3, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = True
    assert torch.equal(trajectory.contacts[0, 0], expected)
    assert not trajectory.contacts[0, 1].any()
    assert trajectory.contacts.dtype == torch.bool
    assert trajectory.contacts.shape == (1, 2, 3, 3)


def test_initial_state_has_no_overlaps():
    config = SimulationConfig(num_particles=30, radius_spread=0.3, box_width=19.0, box_height=24.0)
    state = initial_state(config, 64, generator=torch.Generator().manual_seed(3), dtype=F64)
    gap = config.init_gap * config.radius
    distance = torch.cdist(state.positions, state.positions)
    surface_gap = distance - state.radii[:, :, None] - state.radii[:, None, :]
    surface_gap = surface_gap + torch.eye(30, dtype=F64) * 1e9  # ignore self pairs
    # Lattice neighbours are 2 r_max + gap apart and each jitter is <= gap/4 per coordinate.
    assert surface_gap.min() >= gap / 2 - 1e-12
    low = state.positions - state.radii[..., None]
    high = state.positions + state.radii[..., None] - torch.tensor([19.0, 24.0], dtype=F64)
    assert low.min() >= gap / 4 - 1e-12 and high.max() <= -gap / 4 + 1e-12
    # Radii and masses follow the spread; velocities are N(0, init_speed^2).
    r = config.radius
    assert state.radii.min() >= r * 0.7 and state.radii.max() <= r * 1.3
    torch.testing.assert_close(state.masses, config.mass * (state.radii / r) ** 2)
    # 64 * 30 * 2 samples: the std is within 5 standard errors (1/sqrt(2 * 3840) ~ 1.1 %).
    assert abs(state.velocities.std().item() - config.init_speed) < 0.06
    assert not contact_forces(
        state.positions, state.velocities, state.radii, state.masses, config
    ).pair_contact.any()


def test_reproducible_with_generator():
    config = SimulationConfig(num_frames=6)
    first = simulate(config, 3, generator=torch.Generator().manual_seed(7))
    second = simulate(config, 3, generator=torch.Generator().manual_seed(7))
    other = simulate(config, 3, generator=torch.Generator().manual_seed(8))
    for name in ("positions", "velocities", "radii", "masses", "contacts", "energy"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.positions, other.positions)
    # dtype follows the request; the same seed gives the same scenes in float32 and float64.
    assert first.positions.dtype == torch.float32 and first.energy.dtype == torch.float32
    double = simulate(config, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    torch.testing.assert_close(double.positions[:, 0], first.positions[:, 0].double())


def test_batched_equals_per_scene():
    config = SimulationConfig(num_particles=10, radius_spread=0.2, num_frames=30)
    state = initial_state(config, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    batched = simulate(config, 4, initial=state)
    assert batched.contacts.any(), "scenes must collide for the check to mean anything"
    for scene in range(4):
        alone = ParticleState(
            *(
                getattr(state, name)[scene : scene + 1]
                for name in ("positions", "velocities", "radii", "masses")
            )
        )
        single = simulate(config, 1, initial=alone)
        # Scenes never interact; only the vectorised summation order could differ (round-off
        # ~1e-16 per step, amplified by collisions over 290 steps: allow 1e-9).
        torch.testing.assert_close(single.positions[0], batched.positions[scene], rtol=0, atol=1e-9)
        assert torch.equal(single.contacts[0], batched.contacts[scene])


def test_step_matches_simulate_and_energy():
    config = SimulationConfig(num_particles=8, substeps=3, num_frames=5, restitution=0.8)
    state = initial_state(config, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    trajectory = simulate(config, 2, initial=state)
    current, touched = state, torch.zeros(2, 8, 8, dtype=torch.bool)
    for frame in range(1, config.num_frames):
        for _ in range(config.substeps):
            current, contact = step(current, config)
            touched |= contact
        # simulate runs the same arithmetic per step (round-off only from layout: 1e-12).
        torch.testing.assert_close(
            current.positions, trajectory.positions[:, frame], rtol=0, atol=1e-12
        )
        torch.testing.assert_close(
            current.velocities, trajectory.velocities[:, frame], rtol=0, atol=1e-12
        )
        energy = total_energy(
            current.positions, current.velocities, state.radii, state.masses, config
        )
        torch.testing.assert_close(energy, trajectory.energy[:, frame], rtol=1e-12, atol=0)
        touched = torch.zeros_like(touched)


def test_static_forces_and_energy_of_a_known_configuration():
    # Two unit discs overlapping by 0.5 at rest, one of them also 0.25 into the floor; k = 100.
    config = SimulationConfig(num_particles=2, box_width=10.0, box_height=10.0)
    state = make_state([[[5.0, 0.75], [6.5, 0.75]]], [[[0.0, 0.0], [0.0, 0.0]]])
    forces = contact_forces(state.positions, state.velocities, state.radii, state.masses, config)
    k, g = config.stiffness, config.gravity
    expected = torch.tensor([[[-k * 0.5, k * 0.25 - g], [k * 0.5, k * 0.25 - g]]], dtype=F64)
    torch.testing.assert_close(forces.forces, expected, rtol=1e-14, atol=1e-12)
    assert forces.pair_contact[0].tolist() == [[False, True], [True, False]]
    torch.testing.assert_close(
        forces.wall_forces[0], torch.tensor([[0, 0], [0, 0], [0, 2 * k * 0.25], [0, 0]], dtype=F64)
    )
    energy = total_energy(state.positions, state.velocities, state.radii, state.masses, config)
    expected_energy = 0.5 * k * 0.5**2 + 2 * 0.5 * k * 0.25**2 + 2 * g * 0.75
    assert energy.item() == pytest.approx(expected_energy, rel=1e-14)
    # A disc approaching the floor feels the dashpot against its motion, with its own mass.
    moving = make_state([[[5.0, 0.75]]], [[[0.0, -2.0]]])
    wall = contact_forces(moving.positions, moving.velocities, moving.radii, moving.masses, config)
    c_wall = damping_coefficient(k, 1.0, config.restitution)
    assert wall.wall_forces[0, 2, 1].item() == pytest.approx(k * 0.25 + 2.0 * c_wall, rel=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    config = SimulationConfig(num_particles=10, num_frames=20)
    state = initial_state(config, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    cpu = simulate(config, 4, initial=state)
    on_device = ParticleState(
        *(getattr(state, name).cuda() for name in ("positions", "velocities", "radii", "masses"))
    )
    cuda = simulate(config, 4, initial=on_device)
    assert cuda.positions.device.type == "cuda" and cuda.positions.dtype == F64
    # Same float64 arithmetic up to the order of reductions and fused multiply-adds (round-off
    # ~1e-15 per step, amplified by collisions over 190 steps: allow 1e-8).
    torch.testing.assert_close(cuda.positions.cpu(), cpu.positions, rtol=0, atol=1e-8)
    torch.testing.assert_close(cuda.energy.cpu(), cpu.energy, rtol=1e-10, atol=0)


def test_coincident_discs_give_finite_forces():
    # A degenerate user state (two discs at the same point) must not poison the batch with NaN;
    # the normal is undefined, so the pair force is zero.
    config = SimulationConfig(num_particles=2, box_width=10.0, box_height=10.0)
    state = make_state([[[5.0, 5.0], [5.0, 5.0]]], [[[1.0, 0.0], [0.0, 0.0]]])
    forces = contact_forces(state.positions, state.velocities, state.radii, state.masses, config)
    assert torch.isfinite(forces.forces).all()
    assert forces.pair_contact[0, 0, 1]
    new_state, _ = step(state, config)
    assert torch.isfinite(new_state.positions).all()
