"""Test-only Lightning callback that records which samples each DDP rank trained on."""

from __future__ import annotations

import json
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
