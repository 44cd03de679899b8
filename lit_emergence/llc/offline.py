"""``lit-emergence llc RUN_DIR``: the LLC of a finished run's scheduled checkpoints.

:class:`~lit_emergence.callbacks.ScheduledCheckpoint` saves the weights at log-spaced steps
(``RUN_DIR/checkpoints/step-XXXXXXX.ckpt``); this module estimates the whole-model (and, with
``per_head``, every head's weight-refined) LLC at each of them, with the very code path of
:class:`~lit_emergence.callbacks.LLCMonitor`: the command builds the monitor the run would have
had (:func:`prepare`) and calls its :meth:`~lit_emergence.callbacks.LLCMonitor.estimate` on
every checkpoint's model, on the same minibatches with the same seeds, so a step the monitor
measured during training comes out the same offline.

Settings, later ones winning: ``LLCMonitor``'s defaults; the ``init_args`` of the run's own
``LLCMonitor`` in ``RUN_DIR/config.yaml``; a settings file (a LightningCLI config with an
``LLCMonitor``, e.g. the snippet ``lit-emergence llc calibrate`` writes); the command line.

Minibatches: the run's LLC probe set (``emergence/probe_llc.pt``, the samples the monitor
used) when it holds the monitor's ``num_probe_samples``; otherwise that many samples drawn
from the run's training split as the monitor draws them (``probe_batch(..., split="train")``
of the datamodule rebuilt from ``config.yaml``; it re-simulates the data if its cache is gone).

Output: rows with the columns of ``emergence/llc.csv`` (:data:`~lit_emergence.records.schema.LLC`),
appended to ``RUN_DIR/emergence/llc.csv`` (the history the report reads) unless another file is
named. Resumable: a step whose components already have rows at the same settings is skipped,
so a killed pass continues where it stopped and a second pass adds nothing. A file holding rows
at other settings is refused (one history at mixed settings draws meaningless curves): write
to another file then. ``lr_integral`` (gradient-flow time) is taken from the run's histories at
the same step; where none measured that step it is left empty (the report's gradient-flow axis
leaves such rows out; ``--time_axis step`` shows them).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from lit_emergence.callbacks.llc import LLCMonitor
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.llc.result import LLCResult
from lit_emergence.llc.settings import default_step_size, resolve_n_beta
from lit_emergence.llc_cli import SETTING_OPTIONS  # torch-free, shared with the CLI's options
from lit_emergence.records.csv import CSVHistory, read_rows
from lit_emergence.records.errors import NotARunError, Unavailable
from lit_emergence.records.run import Run, find_checkpoint, load_run
from lit_emergence.records.schema import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EMERGENCE_DIR,
    LLC,
    SCHEDULED_CHECKPOINT_GLOB,
)
from lit_emergence.report.checkpoint import Checkpoint, load_checkpoint, scheduled_checkpoints

__all__ = [
    "SAME_SETTINGS",
    "SETTING_KEYS",
    "BadInputError",
    "LLCSetup",
    "OfflineSummary",
    "estimate_run",
    "monitor_settings",
    "prepare",
    "read_settings_file",
]

#: The ``LLCMonitor`` arguments taken from a config (the callables cannot be: offline, the
#: model is the checkpoint's ``model``, the loss and inputs the monitor's defaults).
SETTING_KEYS = (
    *SETTING_OPTIONS,
    "num_probe_samples",
    "probe_seed",
    "cuda_graph",
    "compile",
)
#: The ``llc.csv`` columns that say at which settings a row was estimated (resume matches them).
SAME_SETTINGS = ("step_size", "localization", "n_beta", "sampler", "num_chains", "num_draws")


class BadInputError(ValueError):
    """Input the command rejects before any sampling, said in one line."""


@dataclass
class LLCSetup:
    """A run ready for LLC estimates: the monitor it would have had, its data and model.

    Attributes:
        run: The run directory as read.
        monitor: The ``LLCMonitor`` built from the resolved settings (never attached to a
            Trainer; only its settings and :meth:`~LLCMonitor.estimate` are used).
        num_samples: ``n`` of ``n_beta = n / ln n`` (None where the rule does not need it).
        device: Where the chains run.
        batches: The fixed minibatches.
        batches_source: Where they came from, in words.
        n_beta: The value of ``n_beta`` these minibatches and settings give.
    """

    run: Run
    monitor: LLCMonitor
    num_samples: int | None
    device: torch.device
    batches: list[dict[str, Tensor]]
    batches_source: str
    n_beta: float

    def load(self, path: Path) -> tuple[Checkpoint, nn.Module]:
        """A checkpoint of the run and the module its LLC is estimated on, on :attr:`device`.

        Raises:
            Unavailable: If the checkpoint cannot be loaded.
        """
        checkpoint = load_checkpoint(dataclasses.replace(self.run, checkpoint=path))
        return checkpoint, self.monitor.model_fn(checkpoint.module).to(self.device)

    def estimate(
        self, model: nn.Module, step: int, restrictions: Mapping[str, Any], **overrides: Any
    ) -> dict[str, LLCResult]:
        """The monitor's estimates of ``restrictions`` on ``model`` at ``step`` (its seed)."""
        return self.monitor.estimate(
            model,
            self.batches,
            step,
            num_samples=self.num_samples,
            restrictions=restrictions,
            cuda_graph=self.monitor.cuda_graph and self.device.type == "cuda",
            **overrides,
        )

    def monitor_arguments(self) -> dict[str, Any]:
        """The monitor's settings as used: sampler settings, minibatches, ``n``."""
        return {
            **self.monitor.settings,
            "batch_size": self.monitor.batch_size,
            "num_batches": len(self.batches),
            "num_probe_samples": self.monitor.num_probe_samples,
            "num_samples": self.monitor.num_samples,
        }

    def step_size(self, localization: float) -> float:
        """The step size an estimate at ``localization`` uses (given, or the default rule)."""
        given = self.monitor.settings["step_size"]
        return float(given) if given is not None else default_step_size(self.n_beta, localization)


def monitor_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings of the first ``LLCMonitor`` among a config's callbacks.

    Args:
        config: A LightningCLI config (``trainer.callbacks`` with ``class_path``/``init_args``).

    Returns:
        Its ``init_args`` restricted to :data:`SETTING_KEYS` (empty without an ``LLCMonitor``).
    """
    trainer = config.get("trainer") if isinstance(config, Mapping) else None
    callbacks = trainer.get("callbacks") if isinstance(trainer, Mapping) else None
    for callback in callbacks if isinstance(callbacks, list) else []:
        if isinstance(callback, Mapping) and str(callback.get("class_path", "")).endswith(
            LLC.writer
        ):
            init_args = callback.get("init_args") or {}
            return {k: v for k, v in init_args.items() if k in SETTING_KEYS}
    return {}


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """``LLCMonitor`` settings from a YAML file.

    Args:
        path: A LightningCLI config with an ``LLCMonitor`` among ``trainer.callbacks`` (such as
            ``RUN_DIR/llc/calibration.yaml``), or a mapping of its ``init_args``.

    Returns:
        The settings (keys of :data:`SETTING_KEYS`).

    Raises:
        BadInputError: If the file is missing, not YAML, or holds no settings.
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise BadInputError(f"settings file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise BadInputError(
            f"settings file {path} is not valid YAML ({type(error).__name__})"
        ) from None
    if not isinstance(content, Mapping):
        raise BadInputError(f"settings file {path} holds no mapping of LLCMonitor settings")
    settings = monitor_settings(content)
    if not settings:
        settings = {k: v for k, v in content.items() if k in SETTING_KEYS}
    unknown = sorted(set(content) - set(SETTING_KEYS) - {"trainer"})
    if not settings or ("trainer" not in content and unknown):
        raise BadInputError(
            f"settings file {path} has no LLCMonitor settings (an LLCMonitor in "
            f"trainer.callbacks, or a mapping of {', '.join(SETTING_KEYS)})"
            + (f"; unknown keys {unknown}" if unknown else "")
        )
    return settings


def open_run(run_dir: str | Path) -> Run:
    """Read a run directory; one with checkpoints but no emergence history is a run here too.

    Raises:
        BadInputError: If the path is no run directory (missing, not a directory, nothing in it).
    """
    path = Path(run_dir)
    try:
        return load_run(path)
    except NotARunError as error:
        if not (path.is_dir() and (path / CHECKPOINT_DIR).is_dir()):
            raise BadInputError(str(error)) from None
    config: Any = {}
    if (path / CONFIG_FILE).is_file():
        try:
            config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        except yaml.YAMLError as error:
            raise BadInputError(f"{path / CONFIG_FILE} is not valid YAML ({error})") from None
    return Run(
        name=path.resolve().name,
        path=path,
        config=config if isinstance(config, dict) else {},
        histories={},
        checkpoint=find_checkpoint(path),
    )


def _training_set_size(config: Mapping[str, Any]) -> int | None:
    """The number of one-step training samples the run's data section gives, else None."""
    data = config.get("data")
    if not isinstance(data, Mapping):
        return None
    from lit_emergence.data import ParticleDataModule

    try:  # checks the settings; simulates nothing
        datamodule = ParticleDataModule(**data)
    except (TypeError, ValueError):
        return None
    # As OneStepDataset counts them: every frame with its history before and a next frame.
    frames = datamodule.simulation.num_frames - 1 - datamodule.history
    return datamodule.num_train * frames


def _draw_from_training_split(run: Run, count: int, seed: int) -> dict[str, Tensor]:
    """The samples an ``LLCMonitor`` draws at the start of training (its probe set)."""
    data = run.config.get("data")
    if not isinstance(data, Mapping):
        raise BadInputError(
            f"{run.path} has no {EMERGENCE_DIR}/{LLC.probe_file} of {count} samples and no data "
            f"section in {CONFIG_FILE} to draw them from"
        )
    from lit_emergence.data import ParticleDataModule

    try:
        datamodule = ParticleDataModule(**data)
        datamodule.prepare_data()
        datamodule.setup("fit")
    except (TypeError, ValueError, OSError) as error:
        raise BadInputError(
            f"cannot rebuild the run's datamodule from {CONFIG_FILE}: {error}"
        ) from None
    batch = datamodule.probe_batch(count, seed, split="train")
    return {k: v for k, v in batch.items() if isinstance(v, Tensor)}


def _minibatches(run: Run, monitor: LLCMonitor) -> tuple[list[dict[str, Tensor]], str]:
    """The monitor's fixed minibatches for this run, and where they came from."""
    count = monitor.num_probe_samples
    path = run.path / EMERGENCE_DIR / LLC.probe_file
    tensors = None
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as error:
            raise BadInputError(f"cannot read {path}: {error}") from None
        if isinstance(saved, dict) and saved and ProbeSet(saved).num_samples == count:
            tensors, source = saved, f"the run's LLC probe set ({EMERGENCE_DIR}/{LLC.probe_file})"
    if tensors is None:
        tensors = _draw_from_training_split(run, count, monitor.probe_seed)
        source = f"{count} samples drawn from the training split (seed {monitor.probe_seed})"
    return list(ProbeSet(tensors).batches(monitor.batch_size)), source


def _leading_size(inputs: tuple) -> int:
    return next(x.shape[0] for x in inputs if isinstance(x, Tensor) and x.ndim > 0)


def prepare(
    run_dir: str | Path,
    overrides: Mapping[str, Any],
    *,
    settings_file: str | Path | None = None,
    per_head: bool = False,
    device: str = "cpu",
) -> LLCSetup:
    """Check everything an LLC pass over a run needs, before any sampling.

    Args:
        run_dir: The run directory.
        overrides: ``LLCMonitor`` settings given on the command line (keys of
            :data:`SETTING_KEYS`; present keys win, None included).
        settings_file: A YAML file of settings (:func:`read_settings_file`).
        per_head: Estimate every head as well as the whole model.
        device: Where to sample (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns:
        The :class:`LLCSetup`.

    Raises:
        BadInputError: One line saying what is wrong (no run, a bad setting, no training set size,
            no minibatches).
    """
    run = open_run(run_dir)
    arguments = monitor_settings(run.config)
    if settings_file is not None:
        arguments.update(read_settings_file(settings_file))
    arguments.update({k: v for k, v in overrides.items() if k in SETTING_KEYS})
    try:
        monitor = LLCMonitor(per_head=per_head, **arguments)  # the callback's own checks
    except (TypeError, ValueError) as error:
        raise BadInputError(str(error)) from None
    num_samples = monitor.num_samples
    if monitor.needs_training_set_size:
        num_samples = _training_set_size(run.config)
        if num_samples is None:
            raise BadInputError(
                f"cannot tell the training set size n of n_beta = n / ln n: {run.path} has no "
                f"usable data section in {CONFIG_FILE}; pass --num_samples N (the number of "
                "training samples) or --n_beta"
            )
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise BadInputError(f"device {device!r}: {error}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r}: no CUDA device here; use --device cpu")
    batches, source = _minibatches(run, monitor)
    sizes = [_leading_size(monitor.inputs_fn(batch)) for batch in batches]
    try:
        n_beta, _, _ = resolve_n_beta(monitor.settings["n_beta"], num_samples, sizes[0], sum(sizes))
    except ValueError as error:
        raise BadInputError(str(error)) from None
    return LLCSetup(run, monitor, num_samples, target, batches, source, n_beta)


def _same(row: Mapping[str, str], expected: Mapping[str, Any]) -> bool:
    for column, value in expected.items():
        text = row.get(column, "")
        if isinstance(value, str):
            if text != value:
                return False
            continue
        try:
            if not math.isclose(float(text), float(value), rel_tol=1e-9):
                return False
        except ValueError:
            return False
    return True


def _lr_integrals(run: Run) -> dict[int, float]:
    """Gradient-flow time at every step some history of the run measured (0 at step 0)."""
    known = {0: 0.0}
    for history in run.histories.values():
        for step, value in zip(history.floats("step"), history.floats("lr_integral"), strict=True):
            if math.isfinite(step) and math.isfinite(value):
                known.setdefault(int(step), float(value))
    return known


@dataclass(frozen=True)
class OfflineSummary:
    """What an offline pass did.

    Attributes:
        out: The history written.
        estimated: Steps estimated now.
        skipped: Steps whose rows were already there.
        failed: Steps whose checkpoint could not be loaded, with the reason.
        verdicts: Verdict -> number of rows written now.
        no_lr_integral: Steps written without ``lr_integral`` (no history measured them).
    """

    out: Path
    estimated: list[int]
    skipped: list[int]
    failed: dict[int, str]
    verdicts: dict[str, int]
    no_lr_integral: list[int]


def estimate_run(
    setup: LLCSetup,
    *,
    out: str | Path | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    quiet: bool = False,
    warn: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> OfflineSummary:
    """Estimate the LLC at every scheduled checkpoint of the run not done yet, appending rows.

    Args:
        setup: From :func:`prepare`.
        out: The history to append to (default ``RUN_DIR/emergence/llc.csv``).
        min_step: Leave out checkpoints before this step.
        max_step: Leave out checkpoints after this step.
        quiet: No progress bar.
        warn: Where warnings go (default: stderr through the progress bar).
        announce: Told, once the input is checked, what is about to be estimated.

    Returns:
        The :class:`OfflineSummary`.

    Raises:
        BadInputError: Before any sampling: no scheduled checkpoints (in the range), a model the
            components cannot be built on, an output file of other columns or settings.
    """
    from tqdm.auto import tqdm

    def say(message: str) -> None:
        (warn or (lambda text: tqdm.write(text, file=sys.stderr)))(message)

    run, monitor = setup.run, setup.monitor
    every = scheduled_checkpoints(run)
    if not every:
        raise BadInputError(
            f"{run.path} has no scheduled checkpoints "
            f"({CHECKPOINT_DIR}/{SCHEDULED_CHECKPOINT_GLOB}); train with "
            "lit_emergence.callbacks.ScheduledCheckpoint (docs/llc.md)"
        )
    chosen = {
        step: path
        for step, path in every.items()
        if (min_step is None or step >= min_step) and (max_step is None or step <= max_step)
    }
    if not chosen:
        window = " and ".join(
            f"{sign} {bound}"
            for sign, bound in ((">=", min_step), ("<=", max_step))
            if bound is not None
        )
        raise BadInputError(
            f"no scheduled checkpoint at steps {window} (there are {len(every)}, steps "
            f"{min(every)}-{max(every)})"
        )
    out_path = Path(out) if out is not None else LLC.path(run.path)
    found = read_rows(out_path)
    if found.fieldnames and found.fieldnames != list(LLC.columns):
        raise BadInputError(
            f"{out_path} has other columns than an LLC history ({', '.join(LLC.columns)}); "
            "name another file with --out"
        )
    # The components, from one checkpoint: a model they cannot be built on fails here.
    try:
        _, model = setup.load(chosen[max(chosen)])
        components = list(monitor.components(model))
    except Unavailable as reason:
        raise BadInputError(f"{chosen[max(chosen)]}: {reason}") from None
    except ValueError as error:
        raise BadInputError(str(error)) from None
    # Resume: rows at these settings are done; rows at other settings refuse the file.
    localization = float(monitor.settings["localization"])
    expected = {
        "step_size": setup.step_size(localization),
        "localization": localization,
        "n_beta": setup.n_beta,
        "sampler": str(monitor.settings["sampler"]),
        "num_chains": monitor.settings["num_chains"],
        "num_draws": monitor.settings["num_draws"],
    }
    done: set[tuple[int, str]] = set()
    for row in found.rows:
        if not _same(row, expected):
            differ = [c for c in SAME_SETTINGS if not _same(row, {c: expected[c]})]
            held = ", ".join(f"{c} {row.get(c, '')}" for c in differ)
            wanted = ", ".join(f"{c} {expected[c]}" for c in differ)
            raise BadInputError(
                f"{out_path} holds estimates at other settings ({held} at step {row['step']}; "
                f"now {wanted}): one history at mixed settings draws meaningless curves; write "
                "to another file with --out FILE, or use the file's settings"
            )
        done.add((int(row["step"]), row["component"]))
    todo = {step: [name for name in components if (step, name) not in done] for step in chosen}
    skipped = [step for step, names in todo.items() if not names]
    todo = {step: names for step, names in todo.items() if names}

    if announce is not None:
        announce(
            f"{len(todo)} of {len(chosen)} checkpoint(s) to estimate ({len(components)} "
            f"component(s)); {describe(setup)}"
        )
    history = CSVHistory(out_path, LLC.columns) if todo else None
    lr_integrals = _lr_integrals(run)
    estimated: list[int] = []
    failed: dict[int, str] = {}
    verdicts: dict[str, int] = {}
    no_lr: list[int] = []
    with tqdm(
        total=len(todo), disable=quiet or not todo, unit="checkpoint", desc="LLC", file=sys.stderr
    ) as bar:
        for step, names in todo.items():
            bar.set_postfix_str(f"step {step}")
            try:
                checkpoint, model = setup.load(chosen[step])
            except Unavailable as reason:
                failed[step] = str(reason)
                say(f"step {step}: {reason}; skipped")
                bar.update()
                continue
            if checkpoint.step != step:
                say(f"{chosen[step].name} holds step {checkpoint.step}; written as step {step}")
            restrictions = monitor.components(model)
            results = setup.estimate(model, step, {name: restrictions[name] for name in names})
            rows = [monitor.row(name, result) for name, result in results.items()]
            lr_integral = lr_integrals.get(step)
            if lr_integral is None:
                no_lr.append(step)
            for row in rows:
                row.update(step=step, lr_integral="" if lr_integral is None else lr_integral)
                verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
            assert history is not None
            history.append(rows)
            estimated.append(step)
            bar.update()
    return OfflineSummary(out_path, estimated, skipped, failed, verdicts, no_lr)


def describe(setup: LLCSetup) -> str:
    """The settings of a pass in one line, for the command's output."""
    settings = setup.monitor.settings
    gamma = float(settings["localization"])
    parts = [
        f"{settings['num_chains']} chains x ({settings['num_burnin']} + {settings['num_draws']})",
        f"step_size {setup.step_size(gamma):.3g}",
        f"localization {gamma:g}",
        f"n_beta {setup.n_beta:.4g}",
        f"{len(setup.batches)} minibatches of {setup.monitor.batch_size} ({setup.batches_source})",
    ]
    return ", ".join(parts)
