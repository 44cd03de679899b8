"""Test-only Lightning callbacks: record the samples each DDP rank trained on; crash on cue."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from lightning.pytorch import Callback


class RecordSampleIndices(Callback):
    """Write ``sample_indices_rank<R>.json`` (every training sample's ``index``) to the run dir."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.indices.extend(int(i) for i in batch["index"].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        path = Path(trainer.default_root_dir) / f"sample_indices_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.indices))


class KillAtStep(Callback):
    """SIGKILL this process (a crash: no cleanup, no flush) at ``$KILL_AT_STEP`` or after a time.

    Armed by the environment, not by arguments, so the run's saved config stays the same for
    the attempt that crashes and the one that resumes (which does not set the variable).
    ``$KILL_RANK`` (default 0) names the global rank that dies. The kill comes after the
    step's measurements and before a checkpoint of that step (Lightning runs checkpoint
    callbacks last).
    """

    def setup(self, trainer, pl_module, stage) -> None:
        # $KILL_AFTER_SECONDS: die that long after the fit is set up, wherever the run is then:
        # inside a measurement, an LLC estimate or a checkpoint write.
        delay = os.environ.get("KILL_AFTER_SECONDS")
        if delay is not None and trainer.global_rank == int(os.environ.get("KILL_RANK", "0")):
            timer = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
            timer.daemon = True
            timer.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = os.environ.get("KILL_AT_STEP")
        rank = int(os.environ.get("KILL_RANK", "0"))
        if step is not None and trainer.global_step == int(step) and trainer.global_rank == rank:
            os.kill(os.getpid(), signal.SIGKILL)
