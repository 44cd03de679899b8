"""Loading run directories written by ``lit-emergence fit``, without W&B or a live model.

A run directory holds the resolved ``config.yaml``, ``checkpoints/`` and the emergence
histories in ``emergence/`` (see ``docs/callbacks.md``): ``collision_scores.csv``,
``attention_distance.csv`` and ``llc.csv``, each one row per measured step and head (or LLC
component), with the step and its gradient-flow time ``lr_integral``. :func:`load_run` reads
what is there and records what is missing instead of failing, so the report can say what it
could not compute; a path with nothing to report on raises :class:`NotARunError`.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from lit_emergence.analysis.dynamics import TimeAxis, time_axis
from lit_emergence.callbacks import AttentionDistanceMonitor, CollisionDetectionMonitor, LLCMonitor
from lit_emergence.callbacks.base import EMERGENCE_DIR
from lit_emergence.physics import SimulationConfig
from lit_emergence.report.errors import NotARunError, Problem, Unavailable

if TYPE_CHECKING:
    from lit_emergence.module import LearnedSimulator

#: The histories the report reads: short name -> (file in ``emergence/``, callback, columns).
HISTORIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "collision": (
        CollisionDetectionMonitor.history_file,
        "CollisionDetectionMonitor",
        ("step", "lr_integral", "layer", "head", "score", "head_class"),
    ),
    "distance": (
        AttentionDistanceMonitor.history_file,
        "AttentionDistanceMonitor",
        ("step", "lr_integral", "layer", "head", "pearson", "g_contact"),
    ),
    "llc": (
        LLCMonitor.history_file,
        "LLCMonitor",
        ("step", "lr_integral", "component", "llc_mean", "llc_std"),
    ),
}

_COLLISION_DEFAULTS = inspect.signature(CollisionDetectionMonitor.__init__).parameters


def head_label(layer: int, head: int) -> str:
    """Return the display name of a head, e.g. ``L1H6``."""
    return f"L{layer}H{head}"


def llc_component(layer: int, head: int) -> str:
    """Return the LLC history's component name of a head, e.g. ``l1h6``."""
    return f"l{layer}h{head}"


@dataclass(frozen=True, eq=False)
class History:
    """One CSV history as columns of strings (an empty string is "not measured").

    Attributes:
        name: Short name (``"collision"``, ``"distance"``, ``"llc"``).
        path: The CSV file.
        columns: Column name -> array of the raw strings, in file order.
    """

    name: str
    path: Path
    columns: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, name: str, path: Path, required: tuple[str, ...]) -> History:
        """Read a history, checking that it has the columns the report needs.

        Args:
            name: Short name of the history.
            path: CSV file.
            required: Columns that must be present.

        Returns:
            The history.

        Raises:
            Unavailable: If the file is missing, empty, or lacks a required column.
        """
        if not path.is_file():
            raise Unavailable(f"no {path.parent.name}/{path.name}")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
        missing = [column for column in required if column not in fieldnames]
        if missing:
            raise Unavailable(
                f"{path.name} lacks the columns {missing} (has {fieldnames or 'no header'})"
            )
        if not rows:
            raise Unavailable(f"{path.name} has no rows yet (nothing was measured)")
        # A row cut short by a crash reads as None in its missing cells: treat as unmeasured.
        columns = {
            c: np.array([row.get(c) or "" for row in rows], dtype=object) for c in fieldnames
        }
        return cls(name=name, path=path, columns=columns)

    def __len__(self) -> int:
        return len(self.columns["step"])

    def floats(self, column: str) -> np.ndarray:
        """A column as floats (NaN where empty or not a number)."""

        def to_float(text: str) -> float:
            try:
                return float(text)
            except ValueError:
                return float("nan")

        return np.array([to_float(text) for text in self.columns[column]], dtype=float)

    def where(self, mask: np.ndarray) -> History:
        """The rows where ``mask`` is true."""
        return dataclasses.replace(self, columns={k: v[mask] for k, v in self.columns.items()})

    def for_head(self, layer: int, head: int) -> History:
        """Rows of one attention head (collision and distance histories)."""
        return self.where(
            (self.floats("layer") == layer) & (self.floats("head") == head),
        )

    def for_component(self, component: str) -> History:
        """Rows of one LLC component (``"model"`` or ``"l<l>h<h>"``)."""
        return self.where(self.columns["component"] == component)

    def time(self, axis: TimeAxis) -> np.ndarray:
        """Time of every row: optimizer steps, or gradient-flow time (``lr_integral``)."""
        steps = self.floats("step")
        if axis == "step":
            return time_axis(steps, "step")
        return time_axis(steps, "gradient_flow", cumulative_lr=self.floats("lr_integral"))

    def last_step(self) -> int:
        """The largest step measured."""
        return int(np.nanmax(self.floats("step")))


@dataclass(eq=False)
class Run:
    """What a run directory holds, read once.

    Attributes:
        name: Display name (the directory's name, made unique among the runs of a report).
        path: The run directory.
        config: The resolved ``config.yaml`` (empty if absent).
        histories: The readable histories by short name.
        checkpoint: The checkpoint to draw attention from (``last.ckpt`` preferred), if any.
        problems: What is missing or unreadable, and why.
    """

    name: str
    path: Path
    config: dict[str, Any]
    histories: dict[str, History]
    checkpoint: Path | None
    problems: list[Problem] = field(default_factory=list)

    def history(self, name: str) -> History:
        """The history ``name``.

        Raises:
            Unavailable: If the run has no such history (the reason is in :attr:`problems`).
        """
        if name not in self.histories:
            file, callback, _ = HISTORIES[name]
            raise Unavailable(f"no usable emergence/{file} (was {callback} in the run?)")
        return self.histories[name]

    @property
    def heads(self) -> list[tuple[int, int]]:
        """Every (layer, head) measured by the collision or distance history, sorted."""
        found: set[tuple[int, int]] = set()
        for name in ("collision", "distance"):
            if name in self.histories:
                history = self.histories[name]
                layers, heads = history.floats("layer"), history.floats("head")
                ok = np.isfinite(layers) & np.isfinite(heads)
                found.update(zip(layers[ok].astype(int), heads[ok].astype(int), strict=True))
        return sorted((int(layer), int(head)) for layer, head in found)

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks (from the config, else from the heads measured)."""
        configured = self.config.get("model", {}).get("n_layers")
        measured = max((layer for layer, _ in self.heads), default=-1) + 1
        return max(int(configured or 0), measured)

    def _collision_setting(self, name: str) -> float:
        for callback in self.config.get("trainer", {}).get("callbacks") or []:
            if str(callback.get("class_path", "")).endswith("CollisionDetectionMonitor"):
                value = (callback.get("init_args") or {}).get(name)
                if value is not None:
                    return float(value)
        return float(_COLLISION_DEFAULTS[name].default)

    @property
    def thresholds(self) -> tuple[float, float]:
        """``(true_threshold, partial_threshold)`` of the run's collision monitor."""
        return self._collision_setting("true_threshold"), self._collision_setting(
            "partial_threshold"
        )

    @property
    def simulation(self) -> SimulationConfig:
        """The run's simulation settings (defaults where the config is silent)."""
        settings = (self.config.get("data") or {}).get("simulation") or {}
        known = {f.name for f in dataclasses.fields(SimulationConfig)}
        return SimulationConfig(**{k: v for k, v in settings.items() if k in known})

    @property
    def probe_path(self) -> Path:
        """Where the collision monitor saved its probe set (the samples scores were measured on)."""
        stem = CollisionDetectionMonitor.history_file.removesuffix(".csv")
        return self.path / EMERGENCE_DIR / f"probe_{stem}.pt"


def load_module(run: Run) -> LearnedSimulator:
    """Load the run's checkpoint as a :class:`~lit_emergence.module.LearnedSimulator` on CPU.

    Args:
        run: A loaded run.

    Returns:
        The module.

    Raises:
        Unavailable: Without a checkpoint, or if it cannot be loaded.
    """
    if run.checkpoint is None:
        raise Unavailable("no checkpoint in checkpoints/")
    from lit_emergence.module import LearnedSimulator  # Lightning only when a model is needed

    try:
        return LearnedSimulator.load_from_checkpoint(run.checkpoint, map_location="cpu")
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise Unavailable(f"cannot load {run.checkpoint.name}: {error}") from error


def _find_checkpoint(path: Path) -> Path | None:
    directory = path / "checkpoints"
    if (directory / "last.ckpt").is_file():
        return directory / "last.ckpt"
    candidates = sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run directory.

    Args:
        path: The run directory (made by ``lit-emergence fit``).
        name: Display name (default: the directory's name).

    Returns:
        The :class:`Run`; missing or unreadable pieces are listed in its ``problems``.

    Raises:
        NotARunError: If ``path`` does not exist, is not a directory, is not a run directory,
            or has no history to report on.
    """
    path = Path(path)
    if not path.exists():
        raise NotARunError(f"{path} does not exist")
    if not path.is_dir():
        raise NotARunError(f"{path} is not a directory")
    has_config = (path / "config.yaml").is_file()
    if not has_config and not (path / EMERGENCE_DIR).is_dir():
        raise NotARunError(
            f"{path} is not a run directory: it has neither config.yaml nor {EMERGENCE_DIR}/ "
            "(run directories are made by `lit-emergence fit`)"
        )
    name = name or path.resolve().name
    problems: list[Problem] = []
    config: dict[str, Any] = {}
    if has_config:
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as error:
            problems.append(
                Problem(name, "config.yaml", f"unreadable ({error.__class__.__name__})")
            )
    else:
        problems.append(
            Problem(name, "config.yaml", "missing: thresholds and box size from the defaults")
        )
    histories: dict[str, History] = {}
    for short, (file, _, required) in HISTORIES.items():
        try:
            histories[short] = History.read(short, path / EMERGENCE_DIR / file, required)
        except Unavailable as reason:
            problems.append(Problem(name, f"{EMERGENCE_DIR}/{file}", str(reason)))
    if not histories:
        files = ", ".join(f"{EMERGENCE_DIR}/{file}" for file, _, _ in HISTORIES.values())
        raise NotARunError(
            f"{path} has no emergence history to report on (looked for {files}); train with "
            "the CollisionDetectionMonitor, AttentionDistanceMonitor or LLCMonitor callbacks"
        )
    checkpoint = _find_checkpoint(path)
    if checkpoint is None:
        problems.append(Problem(name, "checkpoints/", "no checkpoint: Figure 3 needs one"))
    return Run(
        name=name,
        path=path,
        config=config if isinstance(config, dict) else {},
        histories=histories,
        checkpoint=checkpoint,
        problems=problems,
    )
