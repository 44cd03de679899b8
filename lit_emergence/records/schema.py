"""The layout of a run directory: where each record lives and what its columns are.

Every other part of the package reads the layout from here, so a file name, a column or a
label is spelled once. A run directory (made by ``lit-emergence fit``) holds::

    RUN_DIR/
      config.yaml              the resolved configuration
      checkpoints/             Lightning checkpoints (last.ckpt, ...)
      csv/metrics.csv          Lightning's CSV logger
      wandb/                   the W&B run (offline or synced)
      emergence/               the emergence histories, one row per measured step and head
        collision_scores.csv   CollisionDetectionMonitor
        attention_distance.csv AttentionDistanceMonitor
        llc.csv                LLCMonitor (one row per step and LLC component)
        gauge_invariants.csv   GaugeInvariantMonitor
        events.csv             EmergenceDetector
        probe_<history>.pt     the probe set each monitor measured on

Every history has the optimizer step (``step``) and the gradient-flow time at that step
(``lr_integral``, the integral of the learning rate over the steps done) as its first columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Folder of the emergence histories inside a run directory.
EMERGENCE_DIR = "emergence"
#: The resolved configuration of a run.
CONFIG_FILE = "config.yaml"
#: Folder of the checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: The checkpoint a resumed run or the report prefers.
LAST_CHECKPOINT = "last.ckpt"
#: Checkpoints saved at the measurement schedule (``ScheduledCheckpoint``), for offline analysis.
SCHEDULED_CHECKPOINT = "step-{step:07d}.ckpt"
#: Glob of the scheduled checkpoints.
SCHEDULED_CHECKPOINT_GLOB = "step-*.ckpt"


def scheduled_checkpoint_step(path: Path) -> int | None:
    """The step of a scheduled checkpoint file (``step-0000100.ckpt`` -> 100), else None."""
    stem = path.name.removesuffix(".ckpt")
    if not path.name.endswith(".ckpt") or not stem.startswith("step-"):
        return None
    digits = stem.removeprefix("step-")
    return int(digits) if digits.isdigit() else None


#: Time coordinate of a history: optimizer steps, or gradient-flow time (cumulative lr).
TimeAxis = Literal["step", "gradient_flow"]
#: The history column that holds each time axis.
TIME_COLUMNS: dict[str, str] = {"step": "step", "gradient_flow": "lr_integral"}

#: Head classes by collision score, weakest first: a class's index is its code in
#: :func:`lit_emergence.functional.classify_heads` (0 none, 1 partial, 2 true).
HEAD_CLASSES: tuple[str, str, str] = ("none", "partial", "true")
#: Score at or above which a head is a true collision head (the monitor's default).
DEFAULT_TRUE_THRESHOLD = 0.9
#: Score at or above which a head is a partial collision head (the monitor's default).
DEFAULT_PARTIAL_THRESHOLD = 0.5

#: The LLC component of the whole model in ``llc.csv``.
WHOLE_MODEL = "model"


def head_label(layer: int, head: int) -> str:
    """Display name of an attention head, e.g. ``L1H6`` (tables, figures, logged keys)."""
    return f"L{layer}H{head}"


def llc_component(layer: int, head: int) -> str:
    """The ``llc.csv`` component name of a head's weight-refined LLC, e.g. ``l1h6``."""
    return f"l{layer}h{head}"


def classify_score(score: float, true_threshold: float, partial_threshold: float) -> str:
    """Class of a score (``""`` for a score that is not finite): true, partial or none."""
    if not math.isfinite(score):
        return ""
    if score >= true_threshold:
        return "true"
    return "partial" if score >= partial_threshold else "none"


@dataclass(frozen=True)
class HistorySpec:
    """One history file of ``emergence/``.

    Attributes:
        name: Short name used in code (``"collision"``, ``"distance"``, ...).
        file: File name inside ``emergence/``.
        writer: The callback that writes it (for messages).
        columns: Its fixed columns, in order (histories with a variable tail, such as the
            distance grid or the singular values, start with these).
        required: The columns a reader needs to make use of it.
    """

    name: str
    file: str
    writer: str
    columns: tuple[str, ...]
    required: tuple[str, ...]

    def path(self, run_dir: str | Path) -> Path:
        """The file in a run directory."""
        return Path(run_dir) / EMERGENCE_DIR / self.file

    @property
    def relative(self) -> str:
        """``emergence/<file>``, for messages."""
        return f"{EMERGENCE_DIR}/{self.file}"

    @property
    def probe_file(self) -> str:
        """Where the writer saves its probe set, inside ``emergence/``."""
        return f"probe_{self.file.removesuffix('.csv')}.pt"


_HEAD_KEYS = ("step", "lr_integral", "layer", "head")

#: Variants of the collision-detection score, in column order.
COLLISION_VARIANTS: tuple[str, ...] = ("score", "strict", "impact")

#: The collision history's columns are these, then one ``score_band<k>`` column per band of
#: query height (:func:`band_column`; as many as the monitor's ``num_bands``, none for 0).
COLLISION = HistorySpec(
    name="collision",
    file="collision_scores.csv",
    writer="CollisionDetectionMonitor",
    columns=(*_HEAD_KEYS, *COLLISION_VARIANTS, "head_class"),
    required=(*_HEAD_KEYS, "score", "head_class"),
)
#: The relation history's columns are these, then one column per relation the monitor measures
#: (named by the user: ``previous_token``, ``same_object``, ...), each a relation score.
RELATION = HistorySpec(
    name="relation",
    file="relation_scores.csv",
    writer="RelationScoreMonitor",
    columns=_HEAD_KEYS,
    required=_HEAD_KEYS,
)
#: Distance observables that are not functions of the collision score (``g_contact`` is an
#: affine function of it on a fixed probe set): attention-weighted mean distance, per-query
#: Pearson and Spearman correlations, correlation length of G(r). Lengths in contact distances.
DISTANCE_OBSERVABLES: tuple[str, ...] = (
    "mean_distance",
    "query_pearson",
    "query_spearman",
    "corr_length",
)
#: The distance history's columns are these, then one ``g_r<r>`` per grid radius
#: (:func:`distance_column`).
DISTANCE = HistorySpec(
    name="distance",
    file="attention_distance.csv",
    writer="AttentionDistanceMonitor",
    columns=(*_HEAD_KEYS, "pearson", "g_contact", *DISTANCE_OBSERVABLES),
    required=(*_HEAD_KEYS, "pearson", "g_contact"),
)
LLC = HistorySpec(
    name="llc",
    file="llc.csv",
    writer="LLCMonitor",
    columns=(
        "step",
        "lr_integral",
        "component",
        "llc_mean",
        "llc_std",
        "llc_per_chain",
        "num_diverged",
        "trace_rise",
        "still_climbing",
        "acceptance",
        "llc_weak_localization",
        "localization_shift",
        "exceeds_regular_bound",
        "verdict",
        "init_loss",
        "num_sampled",
        "step_size",
        "localization",
        "n_beta",
        "sampler",
        "num_chains",
        "num_draws",
    ),
    required=("step", "lr_integral", "component", "llc_mean", "llc_std"),
)
GAUGE = HistorySpec(
    name="gauge",
    file="gauge_invariants.csv",
    writer="GaugeInvariantMonitor",
    columns=_HEAD_KEYS,
    required=_HEAD_KEYS,
)
EVENTS = HistorySpec(
    name="events",
    file="events.csv",
    writer="EmergenceDetector",
    columns=(
        "step",
        "lr_integral",
        "layer",
        "head",
        "event",
        "event_step",
        "event_lr_integral",
        "value",
        "detail",
    ),
    required=("step", "layer", "head", "event", "event_step"),
)

#: The measured histories a run's report reads, by short name.
MEASURED: dict[str, HistorySpec] = {spec.name: spec for spec in (COLLISION, DISTANCE, LLC)}
#: Every file of ``emergence/``, by short name.
HISTORIES: dict[str, HistorySpec] = {
    spec.name: spec for spec in (COLLISION, RELATION, DISTANCE, LLC, GAUGE, EVENTS)
}


@dataclass(frozen=True)
class Observable:
    """A per-head quantity recorded in a history, followed over training.

    Attributes:
        name: Short name (``"score"``, ``"g_contact"``, ``"pearson"``).
        history: Short name of the history that holds it (``"collision"``, ``"distance"``).
        column: Its column there.
        kind: How it evolves as a head emerges: ``"growth"`` (rises away from its start) or
            ``"decay"`` (approaches its final value).
        sign: Direction in which it moves as a head becomes a collision detector (+1 up,
            -1 down: a local head's attention is anti-correlated with distance).
        label: Axis label.
    """

    name: str
    history: str
    column: str
    kind: Literal["growth", "decay"]
    sign: float
    label: str


#: Every per-head observable, by name.
OBSERVABLES: tuple[Observable, ...] = (
    Observable("score", "collision", "score", "growth", 1.0, "collision-detection score"),
    Observable(
        "g_contact", "distance", "g_contact", "decay", 1.0, "G(contact) (affine in the score)"
    ),
    Observable("pearson", "distance", "pearson", "decay", -1.0, "Pearson r(attention, distance)"),
    Observable(
        "mean_distance",
        "distance",
        "mean_distance",
        "decay",
        -1.0,
        "mean attention distance (contact distances)",
    ),
    Observable(
        "query_pearson",
        "distance",
        "query_pearson",
        "decay",
        -1.0,
        "per-query Pearson r(attention, distance)",
    ),
    Observable(
        "query_spearman",
        "distance",
        "query_spearman",
        "decay",
        -1.0,
        "per-query Spearman r(attention, distance)",
    ),
    Observable(
        "corr_length",
        "distance",
        "corr_length",
        "decay",
        -1.0,
        "correlation length of G(r) (contact distances)",
    ),
)
OBSERVABLE_BY_NAME: dict[str, Observable] = {o.name: o for o in OBSERVABLES}


def band_column(band: int) -> str:
    """Column of ``collision_scores.csv`` holding the score of one height band (``score_band0``)."""
    return f"score_band{band}"


def band_columns(fieldnames: Iterable[str]) -> list[str]:
    """The band-score columns among ``fieldnames``, band 0 (the floor) first."""
    found = {}
    for name in fieldnames:
        suffix = name.removeprefix("score_band")
        if suffix != name and suffix.isdigit():
            found[int(suffix)] = name
    return [found[band] for band in sorted(found)]


def distance_column(r: float) -> str:
    """Column of ``attention_distance.csv`` holding G at ``r`` contact distances (``g_r1.250``)."""
    return f"g_r{r:.3f}"


def gauge_columns(scalar_observables: tuple[str, ...], head_dim: int) -> tuple[str, ...]:
    """Every column of ``gauge_invariants.csv`` for a model of head dimension ``head_dim``."""
    return (
        *GAUGE.columns,
        *scalar_observables,
        "qk_imbalance",
        "ov_imbalance",
        *(f"qk_sv{i}" for i in range(head_dim)),
        *(f"ov_sv{i}" for i in range(head_dim)),
    )


#: The closing summary of a ``fit`` (``RunSummary``): readable, and the same as data.
SUMMARY_FILE = "summary.md"
#: The closing summary as JSON (what ``lit-emergence seeds`` tabulates over seeds).
SUMMARY_JSON = "summary.json"
