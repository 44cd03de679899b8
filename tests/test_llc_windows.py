"""The report's LLC through emergence: verdicts judged again, the trend, the table and figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_helpers import history, summary_of

from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import History
from lit_emergence.report import figures
from lit_emergence.report.events import Phase
from lit_emergence.report.llc_windows import (
    MIN_TREND_POINTS,
    HeadLLCWindow,
    judged_verdicts,
    llc_window_records,
    trend,
)


def llc_history(rows: list[dict[str, object]]) -> History:
    return history("llc", [{"step": index, **row} for index, row in enumerate(rows)])


def test_rows_below_zero_by_two_standard_errors_are_judged_not_at_minimum():
    history = llc_history(
        [
            # mean + 2 * std / sqrt(chains) < 0: no minimum, whatever the file says
            {"llc_mean": -10.0, "llc_std": 4.0, "num_chains": 4, "verdict": "ok"},
            {"llc_mean": -10.0, "llc_std": 4.0, "num_chains": 4, "verdict": "not-converged"},
            # -3 + 2 * 4 / 2 = 5 > 0: not significantly negative, kept
            {"llc_mean": -3.0, "llc_std": 4.0, "num_chains": 4, "verdict": "ok"},
            # diverged takes precedence, as in the estimator
            {"llc_mean": -1e4, "llc_std": 1.0, "num_chains": 4, "verdict": "diverged"},
            # a row written before verdicts existed counts as ok
            {"llc_mean": 12.0, "llc_std": 1.0, "num_chains": 2, "verdict": ""},
        ]
    )
    assert list(judged_verdicts(history)) == [
        "not-at-minimum",
        "not-at-minimum",
        "ok",
        "diverged",
        "ok",
    ]


def test_trend_is_weighted_least_squares_on_log_time_as_numpy_fits_it():
    rng = np.random.default_rng(0)
    t = np.logspace(0, 2, 12)
    sem = rng.uniform(0.5, 2.0, t.size)
    mean = 5.0 + 3.0 * np.log10(t) + rng.normal(0.0, sem)
    found = trend(t, mean, sem)
    # numpy's weighted fit (weights 1/sigma) and its unscaled covariance, inflated by the
    # reduced chi-square when the scatter exceeds the stated errors, as trend() documents.
    coefficients, covariance = np.polyfit(np.log10(t), mean, 1, w=1 / sem, cov="unscaled")
    residuals = mean - np.polyval(coefficients, np.log10(t))
    chi2 = float(np.sum((residuals / sem) ** 2) / (t.size - 2))
    assert found.slope == pytest.approx(coefficients[0], rel=1e-10)
    assert found.error == pytest.approx(math.sqrt(covariance[0, 0] * max(1.0, chi2)), rel=1e-10)
    assert found.answer == "rising" and found.points == t.size
    # The true slope lies within 3 standard errors (a 99.7 % statement, fixed seed).
    assert abs(found.slope - 3.0) < 3 * found.error
    assert trend(t, 5.0 + rng.normal(0.0, sem), sem).answer == "flat"
    assert trend(t, 5.0 - 4.0 * np.log10(t), np.full(t.size, 0.1)).answer == "falling"


def test_trend_without_enough_measured_estimates_is_unresolved_and_says_why():
    t = np.array([1.0, 10.0])
    found = trend(t, np.array([1.0, 2.0]), np.array([0.1, 0.1]), not_measured=5)
    assert math.isnan(found.slope)
    assert found.answer == "unresolved: 2 measured estimate(s), 5 not at a minimum or not an LLC"
    # Unweighted when an error is missing: the residual scatter is the noise.
    unweighted = trend(np.array([1.0, 10.0, 100.0]), np.array([1.0, 2.1, 2.9]), np.full(3, np.nan))
    slope, _ = np.polyfit([0.0, 1.0, 2.0], [1.0, 2.1, 2.9], 1)
    assert unweighted.slope == pytest.approx(slope)


def window(verdicts: list[str], first_phase: Phase | None) -> HeadLLCWindow:
    steps = np.array([10, 20, 40, 80, 160, 320, 640, 1280])[: len(verdicts)]
    mean = np.array(
        [-50.0 if v == "not-at-minimum" else 8.0 + 0.1 * i for i, v in enumerate(verdicts)]
    )
    return HeadLLCWindow(
        run="run",
        summary=summary_of(0.95, layer=1),
        step=steps,
        t=steps / 100.0,
        mean=mean,
        sem=np.full(len(verdicts), 1.0),
        verdicts=np.array(verdicts, dtype=object),
        onset=(20, 0.2),
        became_true=(640, 6.4),
        first_phase=first_phase,
    )


def test_table_counts_estimates_while_emerging_and_in_the_first_phase():
    phase = Phase(
        "first phase", "true below 0.25 of the box height only", 80, 1280, 0.8, 12.8, 0.25
    )
    verdicts = ["ok", "not-at-minimum", "not-at-minimum", "ok", "ok", "not-converged", "ok", "ok"]
    (row,) = llc_window_records([window(verdicts, phase)])
    # Emerging: steps 20..640 (6 estimates, 2 below zero); first phase: [80, 1280), 4 of them.
    assert (row["emerging_estimates"], row["emerging_not_at_minimum"]) == (6, 2)
    assert (row["first_phase_estimates"], row["first_phase_measured"]) == (4, 4)
    assert row["first_phase_not_at_minimum"] == 0
    assert row["first_phase_median"] == pytest.approx(np.median(8.0 + 0.1 * np.arange(3, 7)))
    assert row["first_phase_trend"] == "flat"  # 0.1 per doubling against errors of 1
    assert (row["final_step"], row["final_verdict"]) == (1280, "ok")
    (without,) = llc_window_records([window(verdicts, None)])
    assert without["first_phase_trend"] == "unresolved: no first phase by height"
    assert without["phase_start_step"] == "" and without["first_phase_estimates"] == 0


def test_figure_names_every_verdict_and_mark_and_refuses_a_sparse_history():
    phase = Phase(
        "first phase", "true below 0.5 of the box height only", 40, None, 0.4, math.inf, 0.5
    )
    verdicts = ["ok", "not-at-minimum", "not-converged", "diverged", "localisation-dominated"]
    drawn = figures.llc_emergence([window(verdicts, phase)], "gradient-flow time")
    (legend,) = drawn.figure.legends
    texts = " | ".join(text.get_text() for text in legend.get_texts())
    for expected in (
        "ok",
        "not converged",
        "not at a minimum",
        "diverged",
        "localisation",
        "first phase",
        "onset",
        "true",
    ):
        assert expected in texts, texts
    (ax,) = [ax for ax in drawn.figure.axes if ax.get_visible()]
    assert ax.get_yscale() == "symlog" and ax.get_xscale() == "log"
    assert "L1H0" in ax.get_title() and "red triangle" in drawn.caption
    # Estimates within +-20 keep a linear axis (symlog would label its ends 8.90163 x 10^0).
    small = figures.llc_emergence([window(["ok"] * 5, phase)], "step")
    assert [ax.get_yscale() for ax in small.figure.axes if ax.get_visible()] == ["linear"]
    sparse = window(["ok"] * (MIN_TREND_POINTS - 1), phase)
    with pytest.raises(Unavailable, match="lit-emergence llc RUN_DIR --per_head"):
        figures.llc_emergence([sparse], "step")
