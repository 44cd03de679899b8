"""Bad simulation settings fail early with one line that names the setting and the fix."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lit_emergence.physics import SimulationConfig, initial_state, simulate, step


def error_of(**settings) -> str:
    """The ValueError message that validate() raises for these settings (asserted one line)."""
    with pytest.raises(ValueError) as caught:
        SimulationConfig(**settings).validate()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_particles", 0),
        ("radius", 0.0),
        ("radius", -1.0),
        ("radius_spread", -0.1),
        ("radius_spread", 1.0),
        ("mass", 0.0),
        ("mass", -2.0),
        ("stiffness", 0.0),
        ("stiffness", -100.0),
        ("restitution", 0.0),
        ("restitution", 1.5),
        ("gravity", -1.0),
        ("substeps", 0),
        ("num_frames", 1),
        ("init_gap", -0.5),
        ("init_speed", -1.0),
        ("box_width", 0.0),
        ("box_height", -3.0),
        ("dt", 0.0),
        ("dt", -0.001),
    ],
)
def test_out_of_range_setting_is_named(field, value):
    message = error_of(**{field: value})
    assert f"{field}={value}" in message
    assert "must be" in message


def test_unknown_integrator_lists_the_choices():
    message = error_of(integrator="rk4")
    assert "integrator='rk4'" in message
    assert "verlet" in message and "euler" in message


def test_dt_too_large_for_stiffness_gives_contact_duration_and_limit():
    config = SimulationConfig()
    t_c = config.contact_duration  # ~0.2251 for k=100, m*=0.5, e=0.6
    message = error_of(dt=t_c / 10)
    assert "dt=" in message and "stiffness" in message
    assert f"t_c={t_c:.6g}" in message
    assert f"{t_c / 20:.6g}" in message  # the largest allowed dt
    # Stiffer springs shorten the contact: a dt fine for k=100 is too large for k=1e4.
    stiff_message = error_of(dt=t_c / 25, stiffness=1e4)
    assert f"t_c={SimulationConfig(stiffness=1e4).contact_duration:.6g}" in stiff_message
    # At exactly t_c/20 the step is accepted; dt=None picks t_c/30.
    SimulationConfig(dt=t_c / 20).validate()
    assert SimulationConfig(dt=None).time_step == pytest.approx(t_c / 30)


def test_too_many_particles_gives_capacity_and_what_to_change():
    # Default box 11 x 24 with pitch 2*1 + 1 = 3: 3 x 8 = 24 lattice sites.
    SimulationConfig(num_particles=24).validate()
    message = error_of(num_particles=25)
    assert "num_particles=25" in message
    assert "24 sites" in message
    assert "box_width" in message and "box_height" in message and "init_gap" in message
    # A wider radius spread enlarges the pitch and lowers the capacity: pitch 2*1.5 + 1 = 4,
    # 2 x 6 = 12 sites.
    message = error_of(num_particles=16, radius_spread=0.5)
    assert re.search(r"\b12 sites\b", message), message


def test_validation_runs_before_any_simulation():
    bad = SimulationConfig(radius=-1.0)
    with pytest.raises(ValueError, match=r"radius=-1\.0"):
        simulate(bad, 4)
    with pytest.raises(ValueError, match=r"radius=-1\.0"):
        initial_state(bad, 4)
    good = initial_state(SimulationConfig(), 2)
    with pytest.raises(ValueError, match=r"radius=-1\.0"):
        step(good, bad)


def test_simulate_rejects_mismatched_batch_and_short_runs():
    config = SimulationConfig()
    state = initial_state(config, 2)
    with pytest.raises(ValueError, match="batch_size=3") as caught:
        simulate(config, 3, initial=state)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="num_frames=1"):
        simulate(config, 2, initial=state, num_frames=1)
    with pytest.raises(ValueError, match="batch_size=0"):
        initial_state(config, 0)


def test_to_dict_is_json_and_round_trips():
    config = SimulationConfig(num_particles=8, dt=0.005, integrator="euler")
    data = config.to_dict()
    assert SimulationConfig(**json.loads(json.dumps(data))) == config
    assert data["dt"] == 0.005 and data["integrator"] == "euler"


def test_default_config_is_valid_and_generates():
    config = SimulationConfig(num_frames=3)
    trajectory = simulate(config, 2, generator=torch.Generator().manual_seed(0))
    assert trajectory.positions.shape == (2, 3, 16, 2)
