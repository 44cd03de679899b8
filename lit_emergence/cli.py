"""Command-line entry point: ``lit-emergence fit --config configs/quickstart.yaml``.

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
"""

from __future__ import annotations

import datetime
import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from lit_emergence.data import ParticleDataModule
from lit_emergence.module import LearnedSimulator

# Rank 0 resolves the run directory and exports it, so the DDP worker processes that Lightning
# re-launches from the same command line land in the same directory.
RUN_DIR_ENV = "LIT_EMERGENCE_RUN_DIR"
PROGRAM = "lit-emergence"
# Subcommands beside LightningCLI's: name -> module whose main(argv) returns the exit status.
EXTRA_COMMANDS = {"report": "lit_emergence.report.cli", "seeds": "lit_emergence.seeds"}


def _one_line(message: str) -> str:
    """Condense a (possibly nested, multi-line) jsonargparse message into one line.

    jsonargparse reports ``Parser key "a.b":`` followed by indented details; keep the innermost
    key and the most specific detail (a basic expected type beats a list of union failures).
    """
    text = str(message)
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    keys = re.findall(r'Parser key "([^"]+)"', text)
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


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``RUN_DIR/config.yaml`` and into the W&B run's config.

    A resumed run that finds an identical ``config.yaml`` leaves it alone; a different one is kept
    and the new config is written beside it as ``config-<n>.yaml``, so nothing is overwritten.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Write the config on rank 0 (all ranks agree on completion)."""
        if self.already_saved:
            return
        if trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            text = self.parser.dump(self.config, skip_none=False)
            path = run_dir / self.config_filename
            index = 1
            while path.exists() and path.read_text() != text:
                path = run_dir / f"{Path(self.config_filename).stem}-{index}.yaml"
                index += 1
            if not path.exists():
                tmp = path.with_suffix(".yaml.tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
            self.saved_path = path
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Attach the resolved config to every W&B run: as run config and as a run file."""
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"config": config}, allow_val_change=True)
                logger.experiment.save(
                    str(self.saved_path), base_path=str(self.saved_path.parent), policy="now"
                )


class LitEmergenceCLI(LightningCLI):
    """LightningCLI for the learned particle simulator (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
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
        parser.link_arguments("data.feature_dim", "model.in_features", apply_on="instantiate")
        parser.link_arguments("data.target_dim", "model.out_features", apply_on="instantiate")
        parser.link_arguments("data.rollout_horizons", "model.rollout_horizons")

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Fix the run directory before anything is built, and share it with DDP workers."""
        config = self._subcommand_config()
        config.run_dir = resolve_run_dir(config.run_dir, config.run_root, config.run_name)
        os.environ[RUN_DIR_ENV] = config.run_dir
        config.trainer.default_root_dir = config.run_dir

    def instantiate_classes(self) -> None:
        """Instantiate, turning a ``ValueError`` from any class into a one-line parser error."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            self._parser(self.subcommand).error(str(error))

    def before_fit(self) -> None:
        """Check the model's fast-path settings against the trainer before anything runs."""
        check = getattr(self.model, "check_fast_path", None)
        if check is None:
            return
        try:
            check(self.trainer)
        except ValueError as error:
            self._parser(self.subcommand).error(str(error))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the run's loggers and point checkpoints into the run directory."""
        config = self._subcommand_config()
        if config.trainer.get("logger") in (None, True):
            kwargs["logger"] = self._default_loggers(config)
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(Path(config.run_dir) / "checkpoints")
        return trainer

    @staticmethod
    def _default_loggers(config: Any) -> list[Logger]:
        run_dir = Path(config.run_dir)
        loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
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
            loggers.insert(
                0,
                WandbLogger(
                    # Absolute: W&B's service process resolves relative paths against its own
                    # working directory, which is the first run's when a process trains twice.
                    save_dir=str(run_dir.resolve()),
                    project=config.wandb_project,
                    name=run_dir.name,
                    offline=config.wandb == "offline",
                ),
            )
        return loggers


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``lit-emergence``, ``python -m lit_emergence``).

    W&B runs are finished before returning, so that calling ``main`` from Python (several runs in
    one process) flushes each run's files instead of leaving that to interpreter exit.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        # Commands that work on finished runs (no model, no Trainer): their own small parsers.
        module = importlib.import_module(EXTRA_COMMANDS[argv[0]])
        raise SystemExit(module.main(argv[1:]))
    if argv[:1] in (["-h"], ["--help"]):
        try:
            LitEmergenceCLI(args=args)
        finally:  # LightningCLI's help exits; name the commands it does not know about
            sys.stdout.write(
                "\nAlso:\n  report RUN_DIR [RUN_DIR ...]   figures and tables from finished runs "
                "(lit-emergence report --help)\n  seeds --config CONFIG          train several "
                "seeds, then report (lit-emergence seeds --help)\n"
            )
    cli = LitEmergenceCLI(args=args)
    trainer = getattr(cli, "trainer", None)
    for logger in trainer.loggers if trainer is not None else []:
        if (
            isinstance(logger, WandbLogger)
            and trainer.is_global_zero
            and logger._experiment is not None
        ):
            logger.experiment.finish()


if __name__ == "__main__":
    main()
