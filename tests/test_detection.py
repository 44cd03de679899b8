"""Early detection of emergence: synthetic histories, replay == live, and real Trainer runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from conftest import read_rows, tiny_config, train
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_emergence.callbacks import (
    AttentionDistanceMonitor,
    CollisionDetectionMonitor,
    EmergenceDetector,
    LogSchedule,
)
from lit_emergence.cli import main
from lit_emergence.detection import (
    EVENT_COLUMNS,
    DetectionSettings,
    EmergenceEvent,
    EmergenceTracker,
    detect_events,
    lead_times,
    read_events,
)
from lit_emergence.dynamics import gradient_flow_time
from lit_emergence.functional import neighbour_mask
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.csv import read_rows as read_history

# ----------------------------------------------------------------------------- synthetic runs
# The quickstart's measurement grid (6 per decade up to 10k steps) and gradient-flow time under
# its schedule shape: linear warm-up over 100 steps to 3e-3, then constant.
STEPS = np.array(LogSchedule().steps_up_to(10_000))
LEARNING_RATES = np.minimum(np.arange(1, 10_001) / 100, 1.0) * 3e-3
TIME = gradient_flow_time(LEARNING_RATES, STEPS)
BASELINE = 0.17  # uniform attention: #neighbours / (N - 1)


def sigmoid_rise(t_mid_step: int, top: float = 0.95, hill: float = 4.0) -> np.ndarray:
    """Score rising from BASELINE to ``top`` as a sigmoid in log gradient-flow time."""
    t_mid = gradient_flow_time(LEARNING_RATES, [t_mid_step])[0]
    with np.errstate(divide="ignore"):
        rise = 1.0 / (1.0 + (t_mid / TIME) ** hill)
    return BASELINE + (top - BASELINE) * rise


def history(columns: dict[tuple[int, int], np.ndarray], name: str) -> list[dict[str, object]]:
    """History rows as a monitor writes them: every head at each step, step by step."""
    return [
        {"step": int(step), "lr_integral": float(TIME[i]), "layer": layer, "head": head, name: v[i]}
        for i, step in enumerate(STEPS)
        for (layer, head), v in sorted(columns.items())
    ]


def first_persistent(values: np.ndarray, level: float, start: int = 0, run: int = 2) -> int:
    """Index of the first of ``run`` consecutive values >= level (from ``start``)."""
    for i in range(start, values.size - run + 1):
        if np.all(values[i : i + run] >= level):
            return i
    raise AssertionError("never reached")


def by_name(
    events: list[EmergenceEvent], layer: int = 0, head: int = 0
) -> dict[str, EmergenceEvent]:
    return {e.event: e for e in events if (e.layer, e.head) == (layer, head)}


def test_developing_head_is_flagged_early_and_thresholds_are_exact():
    noise = 0.004
    clean = sigmoid_rise(t_mid_step=600)
    score = clean + np.random.default_rng(0).normal(0.0, noise, clean.size)
    events = by_name(detect_events(history({(0, 0): score}, "score")))

    # partial / true: the first measurement of the first run of two at or above the threshold.
    # No clean point lies within 5 noise of a threshold, so the noisy answer is the clean one.
    for name, threshold in (("partial", 0.5), ("true", 0.9)):
        assert np.min(np.abs(clean - threshold)) > 5 * noise
        index = first_persistent(clean, threshold)
        assert events[name].event_step == STEPS[index]
        assert events[name].step == STEPS[index + 1]  # known once the second one is in
    # onset: the rise passes a quarter of the way to the partial threshold. The flagged step
    # is within one grid point of when the clean curve has done so twice.
    onset_level = BASELINE + 0.25 * (0.5 - BASELINE)
    onset_index = first_persistent(clean, onset_level, start=3)
    assert abs(np.searchsorted(STEPS, events["onset"].event_step) - onset_index) <= 1
    assert events["onset"].step == STEPS[np.searchsorted(STEPS, events["onset"].event_step) + 1]
    # Lead time: true step minus the flagged step of the earliest warning (onset here).
    (lead,) = lead_times(events.values())
    assert lead.earliest_warning == "onset"
    assert lead.true_step == events["true"].event_step
    assert lead.lead_steps == events["true"].event_step - events["onset"].step
    expected = STEPS[first_persistent(clean, 0.9)] - STEPS[onset_index + 1]
    assert lead.lead_steps > 0
    assert abs(lead.lead_steps - expected) <= STEPS[onset_index + 2] - STEPS[onset_index + 1]


def test_power_law_entry_of_the_pearson_is_found_at_its_known_start():
    rng = np.random.default_rng(1)
    start_index = int(np.searchsorted(STEPS, 100))
    t_start = TIME[start_index]
    # The Pearson r is flat at 0.1 until step 100, then falls as 0.1 (t / t_start)^0.6.
    departure = np.where(STEPS >= 100, 0.1 * (TIME / t_start) ** 0.6, 0.0)
    pearson = 0.1 - departure + rng.normal(0.0, 0.003, STEPS.size)
    score = sigmoid_rise(t_mid_step=1000) + rng.normal(0.0, 0.004, STEPS.size)
    settings = DetectionSettings(power_law_observable="pearson")
    events = detect_events(
        history({(0, 0): score}, "score"), history({(0, 0): pearson}, "pearson"), settings
    )
    power_law = by_name(events)["power_law"]
    # Entry: within one grid point of step 100.
    assert abs(np.searchsorted(STEPS, power_law.event_step) - start_index) <= 1
    # Flagged as soon as the window holds >= 4 points spanning >= 0.5 decades of time.
    flag_index = max(start_index + 3, int(np.searchsorted(TIME, t_start * 10**0.5 * (1 - 1e-12))))
    assert power_law.step == STEPS[flag_index]
    assert power_law.value == pytest.approx(0.6, abs=0.06)  # the exponent
    (lead,) = lead_times(events)
    assert lead.earliest_warning == "power_law"
    assert lead.lead_of("power_law") == by_name(events)["true"].event_step - power_law.step > 0
    with pytest.raises(ValueError, match="distance_rows"):
        detect_events(history({(0, 0): score}, "score"), settings=settings)


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_flat_noisy_heads_raise_no_false_alarm(noise):
    # Why none is expected: onset needs two consecutive scores above the baseline by
    # max(a quarter of the way to 0.5 = 0.083, 4 noise); with Gaussian noise (and the baseline
    # a median of three) each exceeds it with probability <= ~5e-4, two in a row <= ~2.5e-7,
    # so 200 heads x 26 measurements expect ~1e-3 onsets. partial/true are 30+ noise away.
    # power_law needs the latest departure above 0.083 *and* 4+ positive departures on one
    # significant straight line in log-log over half a decade: noise does not line up.
    rng = np.random.default_rng(2)
    heads = {
        (layer, head): BASELINE + rng.normal(0.0, noise, STEPS.size)
        for layer in range(25)
        for head in range(8)
    }
    assert detect_events(history(heads, "score")) == []


def test_incremental_feeding_equals_replay():
    rng = np.random.default_rng(3)
    scores = {
        (0, 0): sigmoid_rise(300) + rng.normal(0, 0.004, STEPS.size),
        (0, 1): sigmoid_rise(1000, hill=2.0) + rng.normal(0, 0.004, STEPS.size),
        (1, 0): BASELINE + rng.normal(0, 0.02, STEPS.size),
    }
    pearson = {head: 0.2 - (v - BASELINE) for head, v in scores.items()}
    collision, distance = history(scores, "score"), history(pearson, "pearson")
    for observable in ("score", "pearson"):
        settings = DetectionSettings(power_law_observable=observable)
        replayed = detect_events(collision, distance, settings)
        assert {e.event for e in replayed} >= {"onset", "power_law", "partial", "true"}
        # Live: rows arrive in chunks of random size, the two histories interleaved.
        tracker = EmergenceTracker(settings)
        i = j = 0
        while i < len(collision) or j < len(distance):
            n = int(rng.integers(1, 40))
            if rng.random() < 0.5:
                tracker.add_collision_rows(collision[i : i + n])
                i += n
            else:
                tracker.add_distance_rows(distance[j : j + n])
                j += n
        assert sorted(tracker.events, key=EmergenceEvent.sort_key) == replayed
        # CSV round trip (values written as strings, read back exactly).
        as_text = [{k: str(v) for k, v in e.as_row().items()} for e in replayed]
        assert [EmergenceEvent.from_row(r) for r in as_text] == replayed


def test_lead_time_counts_only_warnings_flagged_before_true():
    # A head that jumps straight over both thresholds: partial and true in the same
    # measurement; its only warning flagged in time is onset.
    score = np.where(STEPS >= 215, 0.95, BASELINE)
    score[STEPS == 147] = 0.3
    events = detect_events(history({(0, 0): score}, "score"))
    named = by_name(events)
    assert named["partial"].event_step == named["true"].event_step == 215
    (lead,) = lead_times(events)
    assert lead.warnings["partial"] == named["true"].step
    assert lead.lead_of("partial") == 215 - named["true"].step < 0
    assert lead.earliest_warning == "onset" and lead.lead_steps == 215 - named["onset"].step


def band_history(bands: dict[tuple[int, int], list[np.ndarray]]) -> list[dict[str, object]]:
    """Collision rows with a score and ``score_band<k>`` columns (NaN bands written empty)."""
    rows = []
    for i, step in enumerate(STEPS):
        for (layer, head), values in sorted(bands.items()):
            row = {"step": int(step), "lr_integral": float(TIME[i]), "layer": layer, "head": head}
            row["score"] = float(np.nanmean([v[i] for v in values]))
            for k, v in enumerate(values):
                row[f"score_band{k}"] = "" if np.isnan(v[i]) else float(v[i])
            rows.append(row)
    return rows


def test_phase_low_bands_true_first_then_everywhere():
    rng = np.random.default_rng(4)
    # head (1, 0): true near the floor from ~step 600, higher up later, at the top from ~3000;
    # head (1, 1): every band rises together (no phase); head (1, 2): the top band is empty
    # (no counted query there) and the low bands rise first: the highest band with a score
    # decides.
    clean = [sigmoid_rise(t) for t in (600, 900, 2000, 3000)]
    together = [sigmoid_rise(600)] * 4
    empty_top = [clean[0], clean[1], clean[3], np.full(STEPS.size, np.nan)]
    heads = {(1, 0): clean, (1, 1): together, (1, 2): empty_top}
    noisy = {
        head: [v + rng.normal(0.0, 0.004, STEPS.size) for v in values]
        for head, values in heads.items()
    }
    events = detect_events(band_history(noisy))
    # no clean point within 5 noise of 0.9: the noisy answers are the clean ones
    assert all(np.nanmin(np.abs(v - 0.9)) > 5 * 0.004 for v in clean)
    named = by_name(events, 1, 0)
    start = first_persistent(clean[0], 0.9)
    assert clean[3][start + 1] < 0.9  # the top band is not true then
    assert named["phase"].event_step == STEPS[start] and named["phase"].step == STEPS[start + 1]
    true_bands = sum(v[start] >= 0.9 for v in clean)
    assert named["phase"].value == true_bands / 4
    end = first_persistent(clean[3], 0.9)  # every band true from here
    assert named["phase_end"].event_step == STEPS[end] and named["phase_end"].value == 1.0
    assert "every band true" in named["phase_end"].detail
    assert not {"phase", "phase_end"} & set(by_name(events, 1, 1))
    empty = by_name(events, 1, 2)
    assert empty["phase"].event_step == STEPS[start]
    assert empty["phase_end"].event_step == STEPS[first_persistent(clean[3], 0.9)]
    # histories without band columns (num_bands=0, older runs): no phase events
    plain = [{k: v for k, v in row.items() if "band" not in k} for row in band_history(noisy)]
    assert not {"phase", "phase_end"} & {e.event for e in detect_events(plain)}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("persistence", 0),
        ("onset_fraction", 0.0),
        ("power_law_observable", "g_contact"),
        ("time_axis", "epoch"),
        ("power_law_min_points", 2),
        ("power_law_max_scatter", 0.0),
    ],
)
def test_bad_settings_are_named(setting, value):
    with pytest.raises(ValueError, match=setting):
        DetectionSettings(**{setting: value})
    with pytest.raises(ValueError, match=setting):
        EmergenceDetector(**{setting: value})
    with pytest.raises(ValueError, match="partial_threshold"):
        EmergenceDetector(partial_threshold=0.95)


def test_bad_detector_setting_is_a_one_line_cli_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    config["trainer"]["callbacks"].append(
        {"class_path": "lit_emergence.callbacks.EmergenceDetector", "init_args": {"persistence": 0}}
    )
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    with mock.patch.object(sys, "argv", ["lit-emergence"]), pytest.raises(SystemExit):
        main(["fit", "--config", "tiny.yaml"])
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "persistence" in err_lines[0], err_lines


# ----------------------------------------------------------------------------- Trainer runs
@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def fit(
    run_dir: Path,
    cache: Path,
    callbacks: list[Callback],
    max_steps: int,
    ckpt_path: Path | None = None,
) -> None:
    module = LearnedSimulator(
        in_features=4, out_features=2, d_model=16, n_layers=1, n_heads=4, rollout_horizons=[1, 5]
    )
    logger = CSVLogger(str(run_dir), name="csv", version="")
    train(
        run_dir,
        callbacks,
        max_steps,
        module,
        run_dir=run_dir,
        cache_dir=cache,
        logger=logger,
        ckpt_path=ckpt_path,
    )


def replay(run_dir: Path, settings: DetectionSettings) -> list[EmergenceEvent]:
    emergence = run_dir / "emergence"
    return detect_events(
        read_history(emergence / "collision_scores.csv").rows,
        read_history(emergence / "attention_distance.csv").rows,
        settings,
    )


def test_detector_in_a_real_run_writes_events_equal_to_a_replay(tmp_path, data_cache):
    # Listed before the monitors, so it reads each measurement one batch later.
    detector = EmergenceDetector(power_law_observable="pearson")
    monitors = [
        CollisionDetectionMonitor(num_probe_samples=16, schedule=LogSchedule(every=2)),
        AttentionDistanceMonitor(num_probe_samples=16, schedule=LogSchedule(every=2)),
    ]
    fit(tmp_path, data_cache, [detector, *monitors], max_steps=12)
    events_file = tmp_path / "emergence" / "events.csv"
    assert events_file.read_text().splitlines()[0] == ",".join(EVENT_COLUMNS)
    assert read_events(events_file) == replay(tmp_path, detector.settings)
    assert detector.consumed == {"collision": 12, "distance": 12}  # the last one via train end


def test_detector_without_a_collision_monitor_stops_at_fit_start(tmp_path, data_cache):
    with pytest.raises(ValueError, match="add a CollisionDetectionMonitor"):
        fit(tmp_path, data_cache, [EmergenceDetector()], max_steps=2)


def test_detector_takes_the_monitors_thresholds_and_falls_back_to_the_score(tmp_path, data_cache):
    detector = EmergenceDetector(power_law_observable="pearson")
    monitor = CollisionDetectionMonitor(
        num_probe_samples=8, true_threshold=0.8, partial_threshold=0.4
    )
    with pytest.warns(UserWarning, match="no AttentionDistanceMonitor"):
        fit(tmp_path, data_cache, [monitor, detector], max_steps=2)
    assert (detector.settings.true_threshold, detector.settings.partial_threshold) == (0.8, 0.4)
    assert detector.settings.power_law_observable == "score"


# Scripted attention: head 0 turns from uniform into a collision head around step 12, head 1
# from attending to far particles into one half-way by step 30 (its Pearson r falls), head 2
# stays uniform. It depends only on the step and the probe set, so a resumed run measures
# exactly what an uninterrupted one does, whatever the weights.
def scripted_attention(module: LearnedSimulator, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    step = module.trainer.global_step
    positions, radii = batch["positions"], batch["radii"]
    neighbours = neighbour_mask(positions, radii, 0.25).float()
    count = neighbours.sum(-1, keepdim=True)
    n = positions.shape[1]
    uniform = (1.0 - torch.eye(n)).expand_as(neighbours) / (n - 1)
    focused = torch.where(count > 0, neighbours / count.clamp(min=1.0), uniform)
    distance = torch.cdist(positions, positions)
    far = distance / distance.sum(-1, keepdim=True)
    w0, w1 = (0.0 if step == 0 else 1.0 / (1.0 + (mid / step) ** 3) for mid in (12.0, 30.0))
    heads = [(1 - w0) * uniform + w0 * focused, (1 - w1) * far + w1 * focused, uniform]
    return torch.stack(heads, dim=1).unsqueeze(1)  # (B, 1 layer, 3 heads, N, N)


class CrashError(RuntimeError):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise CrashError  # ends fit() mid-run, like a crash (no SIGKILL needed)


def scripted_callbacks(run_dir: Path) -> list[Callback]:
    schedule = LogSchedule(every=2)
    return [
        EmergenceDetector(power_law_observable="pearson"),  # first: lags the monitors
        CollisionDetectionMonitor(
            num_probe_samples=16, schedule=schedule, attention_fn=scripted_attention
        ),
        AttentionDistanceMonitor(
            num_probe_samples=16, schedule=schedule, attention_fn=scripted_attention
        ),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            every_n_train_steps=10,
            save_top_k=-1,
            filename="{step}",
        ),
    ]


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_events_file(tmp_path, data_cache):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    fit(whole, data_cache, scripted_callbacks(whole), max_steps=40)
    expected = (whole / "emergence" / "events.csv").read_text()
    events = read_events(whole / "emergence" / "events.csv")
    flagged = {(e.head, e.event) for e in events}
    assert flagged == {(0, "onset"), (0, "partial"), (0, "true")} | {
        (1, "onset"),
        (1, "power_law"),
        (1, "partial"),
    }
    logged = {k for row in read_rows(whole / "csv" / "metrics.csv") for k, v in row.items() if v}
    assert {"emergence/events/true", "emergence/true_step/L0H0"} <= logged

    # Crash at step 27 (events past the step-20 checkpoint are on disk), resume from step 20.
    with pytest.raises(CrashError):
        fit(resumed, data_cache, [*scripted_callbacks(resumed), CrashAt(27)], max_steps=40)
    crashed = read_events(resumed / "emergence" / "events.csv")
    assert max(e.step for e in crashed) > 20
    checkpoint = resumed / "checkpoints" / "step=20.ckpt"
    # The detector ran before the monitors, so the checkpoint has it one measurement behind:
    # the power-law event of step 20 was flagged after the checkpoint and must come back once.
    state = torch.load(checkpoint, weights_only=False)["callbacks"]["EmergenceDetector[events.csv]"]
    assert state == {"consumed": {"collision": 18, "distance": 18}}
    assert any(e.step == 20 and e.event == "power_law" for e in crashed)
    fit(resumed, data_cache, scripted_callbacks(resumed), max_steps=40, ckpt_path=checkpoint)
    assert (resumed / "emergence" / "events.csv").read_text() == expected
    for name in ("collision_scores.csv", "attention_distance.csv"):
        assert (resumed / "emergence" / name).read_text() == (
            whole / "emergence" / name
        ).read_text()
    settings = DetectionSettings(power_law_observable="pearson")
    assert sorted(events, key=EmergenceEvent.sort_key) == replay(whole, settings)
    assert math.isfinite(events[0].lr_integral)
