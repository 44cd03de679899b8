"""Reading a run directory written by ``lit-emergence fit``, without W&B or a live model.

:func:`load_run` reads what is there (the resolved config, the measured histories of
:data:`~lit_emergence.records.schema.MEASURED`, the checkpoint to use) and records what is
missing instead of failing, so a reader such as the report can say what it could not compute;
a path with nothing to read raises :class:`~lit_emergence.records.errors.NotARunError`.
:func:`load_runs` reads several (e.g. the seeds of one report), each under a unique name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lit_emergence.physics.config import SimulationConfig
from lit_emergence.records.csv import read_rows
from lit_emergence.records.errors import (
    MissingHistoryError,
    NotARunError,
    Problem,
    Unavailable,
)
from lit_emergence.records.schema import (
    CHECKPOINT_DIR,
    COLLISION,
    CONFIG_FILE,
    DEFAULT_PARTIAL_THRESHOLD,
    DEFAULT_TRUE_THRESHOLD,
    EMERGENCE_DIR,
    EVENTS,
    LAST_CHECKPOINT,
    MEASURED,
    TIME_COLUMNS,
    HistorySpec,
    TimeAxis,
)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


@dataclass(frozen=True, eq=False)
class History:
    """One CSV history as columns of strings (an empty string is "not measured").

    Attributes:
        name: Short name (``"collision"``, ``"distance"``, ``"llc"``).
        path: The CSV file.
        columns: Column name -> array of the raw strings, in file order.
        malformed: Line numbers of the rows left out as malformed.
        axis: The time axis of :attr:`t` (see :meth:`on`).
    """

    name: str
    path: Path
    columns: dict[str, np.ndarray] = field(repr=False)
    malformed: tuple[int, ...] = ()
    axis: TimeAxis = "gradient_flow"

    @classmethod
    def read(cls, spec: HistorySpec, path: Path) -> History:
        """Read a history, checking that it has the columns readers need.

        Args:
            spec: What the file is (its short name and required columns).
            path: The CSV file.

        Returns:
            The history (a torn last line and malformed rows left out, see
            :func:`~lit_emergence.records.csv.read_rows`).

        Raises:
            Unavailable: If the file is missing, empty, or lacks a required column.
        """
        if not path.is_file():
            shown = f"{path.parent.name}/{path.name}"
            raise Unavailable(f"{shown} is not a file" if path.exists() else f"no {shown}")
        found = read_rows(path)
        missing = [column for column in spec.required if column not in found.fieldnames]
        if missing:
            raise Unavailable(
                f"{path.name} lacks the columns {missing} (has {found.fieldnames or 'no header'})"
            )
        if not found.rows:
            raise Unavailable(f"{path.name} has no rows yet (nothing was measured)")
        columns = {
            c: np.array([row[c] for row in found.rows], dtype=object) for c in found.fieldnames
        }
        return cls(spec.name, path, columns, tuple(found.malformed))

    def __len__(self) -> int:
        return len(self.columns["step"])

    def floats(self, column: str) -> np.ndarray:
        """A column as floats (NaN where empty or not a number)."""
        return np.array([_to_float(text) for text in self.columns[column]], dtype=float)

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
        """Time of every row: optimizer steps, or gradient-flow time (``lr_integral``).

        Raises:
            ValueError: On an axis other than ``"step"`` or ``"gradient_flow"``.
        """
        if axis not in TIME_COLUMNS:
            raise ValueError(f"time axis must be one of {sorted(TIME_COLUMNS)}, got {axis!r}")
        return self.floats(TIME_COLUMNS[axis])

    def on(self, axis: TimeAxis) -> History:
        """The same rows with :attr:`t` on ``axis``.

        Raises:
            ValueError: On an axis other than ``"step"`` or ``"gradient_flow"``.
        """
        if axis not in TIME_COLUMNS:
            raise ValueError(f"time axis must be one of {sorted(TIME_COLUMNS)}, got {axis!r}")
        return dataclasses.replace(self, axis=axis)

    @property
    def t(self) -> np.ndarray:
        """Time of every row on this history's axis (:attr:`axis`)."""
        return self.time(self.axis)

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
        sources: The file each history was read from, or looked for, relative to the run
            directory, by short name (a history not listed: its usual place).
    """

    name: str
    path: Path
    config: dict[str, Any]
    histories: dict[str, History]
    checkpoint: Path | None
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def on(self, axis: TimeAxis) -> Run:
        """The same run with every history's :attr:`History.t` on ``axis``."""
        histories = {name: history.on(axis) for name, history in self.histories.items()}
        return dataclasses.replace(self, histories=histories)

    def history(self, name: str) -> History:
        """The history ``name``.

        Raises:
            Unavailable: If the run has no such history (the reason is in :attr:`problems`).
        """
        if name not in self.histories:
            spec = MEASURED[name]
            relative = self.sources.get(name, spec.relative)
            raise Unavailable(f"no usable {relative} (was {spec.writer} in the run?)")
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

    def _collision_setting(self, name: str, default: float) -> float:
        for callback in self.config.get("trainer", {}).get("callbacks") or []:
            if str(callback.get("class_path", "")).endswith(COLLISION.writer):
                value = (callback.get("init_args") or {}).get(name)
                if value is not None:
                    return float(value)
        return default

    @property
    def thresholds(self) -> tuple[float, float]:
        """``(true_threshold, partial_threshold)`` of the run's collision monitor."""
        return (
            self._collision_setting("true_threshold", DEFAULT_TRUE_THRESHOLD),
            self._collision_setting("partial_threshold", DEFAULT_PARTIAL_THRESHOLD),
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
        return self.path / EMERGENCE_DIR / COLLISION.probe_file

    @property
    def events_path(self) -> Path:
        """The emergence detector's ``events.csv`` (it may not exist)."""
        return EVENTS.path(self.path)


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint of a run directory: ``last.ckpt``, else the newest ``*.ckpt``, else None."""
    directory = path / CHECKPOINT_DIR
    if (directory / LAST_CHECKPOINT).is_file():
        return directory / LAST_CHECKPOINT
    candidates = sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def load_run(path: str | Path, name: str | None = None, llc_file: str | None = None) -> Run:
    """Read a run directory.

    Args:
        path: The run directory (made by ``lit-emergence fit``).
        name: Display name (default: the directory's name).
        llc_file: The LLC history to read instead of ``emergence/llc.csv``, relative to the
            run directory (e.g. ``llc/llc_calibrated.csv``, written by ``lit-emergence llc
            --out``).

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
    has_config = (path / CONFIG_FILE).is_file()
    if not has_config and not (path / EMERGENCE_DIR).is_dir():
        raise NotARunError(
            f"{path} is not a run directory: it has neither {CONFIG_FILE} nor {EMERGENCE_DIR}/ "
            "(run directories are made by `lit-emergence fit`)"
        )
    name = name or path.resolve().name
    problems: list[Problem] = []
    config: dict[str, Any] = {}
    if has_config:
        try:
            config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        except yaml.YAMLError as error:
            problems.append(Problem(name, CONFIG_FILE, f"unreadable ({error.__class__.__name__})"))
    else:
        problems.append(
            Problem(name, CONFIG_FILE, "missing: thresholds and box size from the defaults")
        )
    histories: dict[str, History] = {}
    sources: dict[str, str] = {}
    for short, spec in MEASURED.items():
        relative = sources[short] = llc_file if short == "llc" and llc_file else spec.relative
        try:
            history = histories[short] = History.read(spec, path / relative)
        except Unavailable as reason:
            problems.append(Problem(name, relative, str(reason)))
            continue
        if history.malformed:
            lines = ", ".join(map(str, history.malformed[:5]))
            more = ", ..." if len(history.malformed) > 5 else ""
            reason = f"{len(history.malformed)} malformed rows left out (lines {lines}{more})"
            problems.append(Problem(name, relative, reason))
    if not histories:
        files = ", ".join(spec.relative for spec in MEASURED.values())
        raise NotARunError(
            f"{path} has no emergence history to report on (looked for {files}); train with "
            "the CollisionDetectionMonitor, AttentionDistanceMonitor or LLCMonitor callbacks"
        )
    checkpoint = find_checkpoint(path)
    if checkpoint is None:
        problems.append(Problem(name, f"{CHECKPOINT_DIR}/", "no checkpoint: Figure 3 needs one"))
    return Run(
        name=name,
        path=path,
        config=config if isinstance(config, dict) else {},
        histories=histories,
        checkpoint=checkpoint,
        problems=problems,
        sources=sources,
    )


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_runs(
    run_dirs: Sequence[str | Path], llc_file: str | None = None
) -> tuple[list[Run], list[Problem]]:
    """Load every run directory; ones that are not runs are set aside with the reason.

    Runs whose directories share a name get ``-2``, ``-3`` ... appended, so files never clash.
    ``llc_file`` (relative to each run directory) replaces ``emergence/llc.csv``.

    Returns:
        ``(runs, skipped)``: at least one run.

    Raises:
        NotARunError: If no path is a usable run (the message gives every reason).
        MissingHistoryError: If ``llc_file`` is given and no run has it in usable form.
    """
    runs: list[Run] = []
    skipped: list[Problem] = []
    taken: set[str] = set()
    for run_dir in run_dirs:
        # The name given, not a symlink's target (runs/seeds/seed0 -> ../first-run is "seed0").
        base = _safe_name(Path(os.path.abspath(run_dir)).name) or "run"
        name, index = base, 2
        while name in taken:
            name, index = f"{base}-{index}", index + 1
        try:
            run = load_run(run_dir, name=name, llc_file=llc_file)
        except NotARunError as error:
            skipped.append(Problem(str(run_dir), "run", str(error)))
            continue
        taken.add(name)
        runs.append(run)
    if not runs:
        raise NotARunError("; ".join(p.reason for p in skipped) or "no run directory given")
    if llc_file and not any("llc" in run.histories for run in runs):
        reasons = "; ".join(
            f"{p.run}: {p.reason}" for run in runs for p in run.problems if p.item == llc_file
        )
        raise MissingHistoryError(
            f"no run has a usable LLC history {llc_file} ({reasons}); give its path relative "
            "to each run directory, e.g. llc/llc_calibrated.csv (written by lit-emergence llc "
            "--out)"
        )
    return runs, skipped
