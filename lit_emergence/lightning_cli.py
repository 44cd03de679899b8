"""The LightningCLI behind ``lit-emergence fit`` (and ``validate``, ``test``, ``predict``).

A :class:`~lightning.pytorch.cli.LightningCLI` over :class:`~lit_emergence.module.LearnedSimulator`
and :class:`~lit_emergence.data.ParticleDataModule`, with three additions:

* **One directory per run.** ``--run_dir`` names it; by default it is
  ``<run_root>/<run_name>-<YYYYmmdd-HHMMSS>-<4 hex>`` so that two runs started from the same config
  in the same place never clash. Checkpoints (``checkpoints/``), the resolved ``config.yaml``,
  the CSV metrics (``csv/metrics.csv``), W&B files (``wandb/``) and later the emergence
  histories all live there. Resuming: ``lit-emergence fit --config RUN_DIR/config.yaml
  --ckpt_path RUN_DIR/checkpoints/last.ckpt``.
* **Loggers from one flag.** ``--wandb offline`` (default; no account needed), ``online`` or
  ``disabled``; a CSV logger is always added. A ``trainer.logger`` given in the config wins.
* **One-line errors.** Bad settings stop the program before any simulation or training with a
  single ``lit-emergence: error: ...`` line that names the setting, and leave no files behind.
* **A quiet console that ends with what happened.** :class:`~lit_emergence.callbacks.RunSummary`
  prints the run directory at the start and a summary of what emerged at the end (also
  ``RUN_DIR/summary.md``); warnings that ask nothing of the user are filtered by exact message
  and module (:func:`quiet_known_noise`); the progress bar shows no meaningless ``v_num``.
* **A W&B run worth opening.** Runs carry a ``job_type`` (the subcommand), tags
  (``config:<run_name>``, ``seed:<seed>``, and ``--wandb_tags``) and an optional group
  (``--wandb_group``; ``lit-emergence seeds`` puts its seeds and report in one), the resolved
  config as a real file, and a resumed run continues its W&B run.

Importing this module imports torch and Lightning; :mod:`lit_emergence.cli` does so only when
a command runs (or its help is not cached yet).
"""

from __future__ import annotations

import datetime
import difflib
import errno
import importlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_emergence.callbacks.run_summary import RunSummary
from lit_emergence.cli import PROGRAM
from lit_emergence.data import ParticleDataModule
from lit_emergence.module import LearnedSimulator
from lit_emergence.records.files import replace_text
from lit_emergence.records.schema import CHECKPOINT_DIR, LAST_CHECKPOINT
from lit_emergence.resume import (
    RandomStateCheckpoint,
    ResumePoint,
    RunCSVLogger,
    SafeCheckpointIO,
    read_resume_point,
    save_wandb_run_id,
    wandb_run_id,
)

# Rank 0 resolves the run directory and exports it, so the DDP worker processes that Lightning
# re-launches from the same command line land in the same directory.
RUN_DIR_ENV = "LIT_EMERGENCE_RUN_DIR"
#: The resolved config's name among a W&B run's files (W&B keeps its own ``config.yaml``).
WANDB_CONFIG_FILE = "lit_emergence_config.yaml"


# Lines of a jsonargparse union report that say nothing about what is wrong with the value.
_GENERIC = (
    "Parser key",
    "Does not validate",
    "Subtypes:",
    "Errors:",
    "Not a valid subclass",
    "Subclass types expect",
    "a class path",
    "a dict ",
    "Expected a <class 'NoneType'>",
    "Given value",
    "Expected a path but",
    "Problem with given class_path",
)


def _import_problem(text: str) -> str | None:
    """'cannot import X (did you mean Y?)' for a class_path that does not resolve."""
    match = re.search(r"Problem with given class_path '([\w.]+)'", text)
    if match is None:
        return None
    path = match.group(1)
    module_name, _, name = path.rpartition(".")
    hint = ""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        hint = f": there is no module {module_name}"
    else:
        names = [n for n in dir(module) if n[:1].isupper()]
        close = difflib.get_close_matches(name, names, 3)
        suggestions = " or ".join(f"{module_name}.{c}" for c in close)
        hint = f" (did you mean {suggestions}?)" if close else f": {module_name} has no {name}"
    return f"cannot import the class {path}{hint}"


def _one_line(message: str) -> str:
    """Condense a (possibly nested, multi-line) jsonargparse message into one line.

    jsonargparse reports ``Parser key "a.b":`` followed by indented details, and for a union
    type (a callback, a schedule) the failure of every alternative; keep the innermost key and
    the most specific detail: a class that cannot be imported, else the first message of a
    class that refused its arguments, else a basic expected type.
    """
    text = str(message)
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys and "lightning.pytorch.callbacks.callback.Callback" in text:
        keys = ["trainer.callbacks"]
    where = f"{keys[-1]}: " if keys else ""
    problem = _import_problem(text)
    if problem is not None:
        return where + problem
    if "Does not validate against any of the Union subtypes" in text:
        # A class that refused its arguments says why; type mismatches are handled below.
        specific = [line for line in lines if not line.startswith((*_GENERIC, "Expected a"))]
        if specific:
            return where + specific[0]
    details = [line for line in lines if not line.startswith("Parser key")] or lines
    detail = next((d for d in details if d.startswith("Expected a <class")), details[0])
    if "Got value" not in detail:
        given = next((d for d in details if d.startswith("Given value:")), None)
        detail = f"{detail.rstrip('.')}. {given}" if given else detail
    detail = re.sub(r"<class '([\w.]+)'>", r"\1", detail)
    return f"{keys[-1]}: {detail}" if keys else detail


class OneLineErrorParser(LightningArgumentParser):
    """Argument parser whose errors are a single line on stderr (exit code 2)."""

    def error(self, message: str, *args: Any, **kwargs: Any) -> NoReturn:
        """Print ``lit-emergence: error: <message>`` and exit with status 2."""
        sys.stderr.write(f"{PROGRAM}: error: {_one_line(message)}\n")
        raise SystemExit(2)


def _check_run_dir(run_dir: Path) -> None:
    """The run directory is, or can be made, a writable directory.

    Raises:
        ValueError: One line naming the file in the way or the folder that cannot be written.
    """
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ValueError(
            f"run directory {run_dir}: {existing} is a file, not a directory; choose another "
            "--run_dir or --run_root"
        )
    try:  # a real write: permission bits do not stop root, a read-only mount does
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(
            f"run directory {run_dir}: cannot write in {existing} ({error.strerror}); choose "
            "another --run_dir or --run_root"
        ) from None


def resolve_run_dir(run_dir: str | None, run_root: str, run_name: str) -> str:
    """Return the run directory: the explicit one, the one rank 0 chose, or a fresh unique name."""
    if run_dir:
        return str(run_dir)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return inherited
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # os.urandom, not the global RNG: choosing a name must not change the training seed stream.
    unique = os.urandom(2).hex()
    return str(Path(run_root) / f"{run_name}-{stamp}-{unique}")


# Settings that say how to start this attempt, not what the run is: a resumed run that differs
# from its config.yaml only in these has not changed its config.
_ATTEMPT_KEYS = ("ckpt_path", "if_no_checkpoint")


def _run_settings(text: str) -> dict[str, Any]:
    settings = yaml.safe_load(text) or {}
    return {k: v for k, v in settings.items() if k not in _ATTEMPT_KEYS}


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [
            changed
            for key in keys
            for changed in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


# ------------------------------------------------------------------------------ console noise
#: Warnings that ask nothing of the user, each by exact message, category and module:
#: torch deprecates ``LeafSpec``, which Lightning's own pytree helper still builds; and the
#: validation rollout errors are torchmetrics values reduced exactly over ranks before they are
#: logged, so Lightning's advice to add ``sync_dist=True`` does not apply (it would average
#: values that are already global).
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree\Z",
    ),
    (
        r"It is recommended to use `self\.log\('val/rollout_rmse_h\d+', \.\.\., sync_dist=True\)`",
        Warning,
        r"lightning\.pytorch\.trainer\.connectors\.logger_connector\.result\Z",
    ),
)
#: Log lines that ask nothing of the user, by the start of their message: Lightning's
#: advertisement for its own logger, logged (INFO) through its rank-zero log whenever no
#: LitLogger is attached.
KNOWN_LOG_LINES: tuple[str, ...] = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
)


class _DropLines(logging.Filter):
    """Drop log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Filter the warnings and log lines of :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_LINES`.

    Each filter names one message, its category and the module that emits it: any other
    warning, from the same module or another, still shows. Safe to call more than once.
    """
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    # The logger behind Lightning's rank_zero_info (lightning.pytorch.utilities.rank_zero).
    from lightning_utilities.core import rank_zero

    logger = rank_zero.log
    if not any(isinstance(f, _DropLines) for f in logger.filters):
        logger.addFilter(_DropLines(KNOWN_LOG_LINES))


class RunWandbLogger(WandbLogger):
    """Lightning's W&B logger, without the console noise it causes by itself.

    * It does not pass ``anonymous=None`` to ``wandb.init`` (W&B warns on any value of that
      deprecated setting);
    * it creates the save directory before W&B starts (W&B looks for a git repository there
      and warns when the directory does not exist yet);
    * W&B's console output is ``quiet`` (no end-of-run dump of the first ten keys; the run's
      own summary says what matters) unless ``WANDB_QUIET`` says otherwise;
    * every key is lower case, like the package's own (``<family>/<quantity>``): Lightning's
      ``LearningRateMonitor`` logs ``lr-AdamW/pg1``, which W&B gets as ``lr-adamw/pg1``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "WANDB_QUIET" not in os.environ and "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True)
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log with lower-case keys (see the class docstring)."""
        super().log_metrics({key.lower(): value for key, value in metrics.items()}, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run (started on first use, in an existing save directory)."""
        if self._experiment is None and self._save_dir:
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        return super().experiment


class _NoVersionRich(RichProgressBar):
    """Lightning's rich progress bar without ``v_num`` (a W&B id's last four characters)."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The logged progress-bar values, without ``v_num``."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        # "Epoch 0/-2" for a run bounded by steps (max_epochs -1): say only the epoch.
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            description = f"Epoch {current_epoch}"
            return f"{description:{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)


class _NoVersionTQDM(TQDMProgressBar):
    """Lightning's tqdm progress bar without ``v_num``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The logged progress-bar values, without ``v_num``."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def _drop_version_number(trainer: Trainer) -> None:
    """Make Lightning's default progress bar show no ``v_num`` (a user's own bar is kept)."""
    bar = trainer.progress_bar_callback
    if type(bar) is RichProgressBar:
        bar.__class__ = _NoVersionRich
    elif type(bar) is TQDMProgressBar:
        bar.__class__ = _NoVersionTQDM


def _seed_tag(seed: Any) -> str | None:
    if isinstance(seed, bool) or seed is None:
        return None
    return f"seed:{seed}"


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``RUN_DIR/config.yaml`` and into the W&B run's config.

    A resumed run whose settings equal its ``config.yaml`` (the checkpoint to resume from
    aside) leaves the file alone. Changed settings are kept: the new config is written beside
    the first as ``config-<n>.yaml`` and one line names the keys that changed.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Write the config on rank 0 (all ranks agree on completion)."""
        if self.already_saved:
            return
        if trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            text = self.parser.dump(self.config, skip_none=False)
            settings = _run_settings(text)
            stem = Path(self.config_filename).stem
            path, index = run_dir / self.config_filename, 1
            while path.exists() and _run_settings(path.read_text()) != settings:
                path, index = run_dir / f"{stem}-{index}.yaml", index + 1
            if not path.exists():
                first = run_dir / self.config_filename
                if first.exists():
                    changed = _changed_keys(_run_settings(first.read_text()), settings)
                    sys.stderr.write(
                        f"{PROGRAM}: the config changed since {first.name} "
                        f"({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''}): "
                        f"saved as {path.name}\n"
                    )
                replace_text(path, text)
            self.saved_path = path
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger) and logger.version:
                    save_wandb_run_id(run_dir, str(logger.version))
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Attach the resolved config to every W&B run: as run config and as a run file.

        The file is a copy in the run's files (``lit_emergence_config.yaml``, beside W&B's own
        ``config.yaml``), not a link to a file that may move with its run directory.
        """
        text = self.parser.dump(self.config, skip_none=False)
        config = yaml.safe_load(text)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.config.update({"config": config}, allow_val_change=True)
                copy = Path(run.dir) / WANDB_CONFIG_FILE
                replace_text(copy, text)
                run.save(str(copy), base_path=run.dir, policy="now")


class LitEmergenceCLI(LightningCLI):
    """LightningCLI for the learned particle simulator (see the module docstring)."""

    def __init__(self, *args: Any, prog: str = PROGRAM, **kwargs: Any) -> None:
        quiet_known_noise()
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        # The main parser's prog also starts every subcommand's usage line.
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml", "prog": prog})
        super().__init__(LearnedSimulator, ParticleDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Use the one-line-error parser."""
        self.parser_class = OneLineErrorParser
        return super().init_parser(**kwargs)

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        self.parser_class = OneLineErrorParser
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Run-directory and logging flags; link data properties into the model."""
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Directory of this run (default: a fresh one under --run_root).",
        )
        parser.add_argument(
            "--run_root",
            type=str,
            default="runs",
            help="Parent directory of automatically named run directories.",
        )
        parser.add_argument(
            "--run_name",
            type=str,
            default="run",
            help="Prefix of the automatically named run directory and W&B run name.",
        )
        parser.add_argument(
            "--wandb",
            type=Literal["offline", "online", "disabled"],
            default="offline",
            help="Weights & Biases mode (offline needs no account).",
        )
        parser.add_argument(
            "--wandb_project", type=str, default="lit_emergence", help="W&B project name."
        )
        parser.add_argument(
            "--wandb_group",
            type=str | None,
            default=None,
            help="W&B group of the run (runs of one experiment, e.g. its seeds; default: "
            "$WANDB_RUN_GROUP, else none).",
        )
        parser.add_argument(
            "--wandb_tags",
            type=list[str],
            default=[],
            help="More W&B tags (config:<run_name> and seed:<seed> are always added).",
        )
        parser.add_argument(
            "--if_no_checkpoint",
            type=Literal["error", "start"],
            default="error",
            help="With --ckpt_path last and no checkpoint in the run directory yet: stop with "
            "an error (default), or start the run over from step 0.",
        )
        parser.link_arguments("data.feature_dim", "model.in_features", apply_on="instantiate")
        parser.link_arguments("data.target_dim", "model.out_features", apply_on="instantiate")
        parser.link_arguments("data.rollout_horizons", "model.rollout_horizons")

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Fix the run directory and check the checkpoint before anything is built."""
        config = self._subcommand_config()
        config.run_dir = resolve_run_dir(config.run_dir, config.run_root, config.run_name)
        os.environ[RUN_DIR_ENV] = config.run_dir
        config.trainer.default_root_dir = config.run_dir
        try:
            _check_run_dir(Path(config.run_dir))
        except ValueError as error:
            self._parser(self.subcommand).error(str(error))

    def _parse_ckpt_path(self) -> None:
        """Check the checkpoint to resume from before LightningCLI reads its hyperparameters."""
        subcommand = self.config.get("subcommand")
        self.resume_point = None
        if subcommand == "fit":
            self.resume_point = self._resume_point(self.config[subcommand], subcommand)
        super()._parse_ckpt_path()

    def _resume_point(self, config: Any, subcommand: str) -> ResumePoint | None:
        """Read the checkpoint to resume from (``last``: the run directory's), or None."""
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            return None
        if ckpt_path == "last":
            if not config.run_dir:
                self._parser(subcommand).error(
                    "ckpt_path: 'last' needs the run's directory: resume with --config "
                    "RUN_DIR/config.yaml (or --run_dir RUN_DIR)"
                )
            last = Path(config.run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
            if not last.is_file():
                if config.if_no_checkpoint == "start":
                    sys.stderr.write(
                        f"{PROGRAM}: no checkpoint in {last.parent} yet: starting the run over\n"
                    )
                    config.ckpt_path = None
                    return None
                self._parser(subcommand).error(
                    f"ckpt_path: no checkpoint in {last.parent} yet (the run stopped before its "
                    "first one); add --if_no_checkpoint start to start it over"
                )
            config.ckpt_path = ckpt_path = str(last)
        try:
            return read_resume_point(ckpt_path)
        except ValueError as error:
            self._parser(subcommand).error(f"ckpt_path: {error}")

    def instantiate_classes(self) -> None:
        """Instantiate, turning a ``ValueError`` from any class into a one-line parser error."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            self._parser(self.subcommand).error(str(error))
        except MisconfigurationException as error:  # Trainer settings Lightning rejects
            self._parser(self.subcommand).error(f"trainer: {str(error).splitlines()[0]}")

    def before_fit(self) -> None:
        """Check every setting Lightning or the model would reject late, before any work."""
        try:
            self._check_trainer(self.trainer)
            check = getattr(self.model, "check_optimization", None)
            if check is not None:
                check()
            check = getattr(self.model, "check_fast_path", None)
            if check is not None:
                check(self.trainer)
        except ValueError as error:
            self._parser(self.subcommand).error(str(error))

    @staticmethod
    def _check_trainer(trainer: Trainer) -> None:
        """Trainer settings Lightning accepts but fails on mid-run."""
        interval = trainer.val_check_interval
        if isinstance(interval, int | float) and not interval > 0:
            raise ValueError(
                f"trainer.val_check_interval={interval} must be > 0 (steps, or a fraction of an "
                "epoch)"
            )
        clip = trainer.gradient_clip_val
        if clip is not None and not (math.isfinite(float(clip)) and float(clip) >= 0):
            raise ValueError(f"trainer.gradient_clip_val={clip} must be finite and >= 0 (or null)")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the run's loggers and point checkpoints into the run directory."""
        config = self._subcommand_config()
        if config.trainer.get("logger") in (None, True):
            kwargs["logger"] = self._default_loggers(config)
        trainer = super().instantiate_trainer(**kwargs)
        # Global random states travel in every checkpoint, so a resumed run draws as it would
        # have (dropout, user code); the data order is the training loader's own state.
        trainer.callbacks.append(RandomStateCheckpoint())
        # The run directory at the start, what emerged at the end (unless the config has one).
        if not any(isinstance(c, RunSummary) for c in trainer.callbacks):
            trainer.callbacks.append(RunSummary())
        _drop_version_number(trainer)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.bind(trainer)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(Path(config.run_dir) / "checkpoints")
        return trainer

    def _default_loggers(self, config: Any) -> list[Logger]:
        run_dir = Path(config.run_dir)
        loggers: list[Logger] = [RunCSVLogger(run_dir, resume=self.resume_point)]
        if config.wandb != "disabled":
            try:
                import wandb  # noqa: F401
            except ImportError:
                warnings.warn(
                    "wandb is not installed, logging to CSV only: "
                    "pip install 'lit_emergence[wandb]' or pass --wandb disabled",
                    stacklevel=2,
                )
                return loggers
            tags = [f"config:{config.run_name}", _seed_tag(config.get("seed_everything"))]
            tags += [tag for tag in config.get("wandb_tags") or [] if tag not in tags]
            loggers.insert(
                0,
                RunWandbLogger(
                    # Absolute: W&B's service process resolves relative paths against its own
                    # working directory, which is the first run's when a process trains twice.
                    save_dir=str(run_dir.resolve()),
                    project=config.wandb_project,
                    name=run_dir.name,
                    offline=config.wandb == "offline",
                    # One W&B run per run directory: a resumed run continues it.
                    id=wandb_run_id(run_dir),
                    resume="allow",
                    group=config.get("wandb_group") or os.environ.get("WANDB_RUN_GROUP"),
                    job_type=self.subcommand or "fit",
                    tags=[tag for tag in tags if tag],
                ),
            )
        return loggers


# A full disk, a quota, a read-only folder, a file-size limit: the run cannot go on.
_WRITE_FAILURES = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.EIO,
}
_NOT_PERMITTED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write_failure(error: OSError) -> NoReturn:
    """Stop a run whose files cannot be written with one line: the path and the free space."""
    # The run's own writes (lit_emergence.records.files) name their file.
    path = Path(error.filename) if error.filename else Path(".")
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("."))
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    remedy = "make it writable" if error.errno in _NOT_PERMITTED else "free some space"
    sys.stderr.write(
        f"{PROGRAM}: error: cannot write {path}: {error.strerror or error} ({free}); everything "
        f"written before is intact: {remedy} and resume with --ckpt_path last\n"
    )
    raise SystemExit(1)


def run(args: list[str] | None, prog: str = PROGRAM) -> None:
    """Run :class:`LitEmergenceCLI` on ``args`` (None: ``sys.argv``), then finish its W&B runs.

    W&B runs are finished before returning, so that calling this from Python (several runs in
    one process) flushes each run's files instead of leaving that to interpreter exit.

    Args:
        args: The arguments after the program name, or None to read ``sys.argv``.
        prog: The program name the usage lines show.
    """
    try:
        cli = LitEmergenceCLI(args=args, prog=prog)
    except OSError as error:
        if error.errno not in _WRITE_FAILURES:
            raise
        _write_failure(error)
    trainer = getattr(cli, "trainer", None)
    for logger in trainer.loggers if trainer is not None else []:
        if (
            isinstance(logger, WandbLogger)
            and trainer.is_global_zero
            and logger._experiment is not None
        ):
            logger.experiment.finish()
