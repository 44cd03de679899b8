"""Wall-time overhead of the measurement callbacks on the quickstart, measured side by side.

    python benchmarks/callback_overhead.py [--config configs/quickstart.yaml] [--max_steps N]

Runs the quickstart twice, one after the other in the same environment: once with the measured
callbacks (default: the two attention-structure monitors), once without them. Any other
``lit_emergence.callbacks`` monitor in the config (e.g. the LLC monitor) is removed from both.
The data cache is prepared first so that neither run pays for simulation. Prints both wall
times and the overhead ``(with - without) / without`` (the promise: at most 10 % with the
default schedule).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MAX_OVERHEAD = 0.10


def fit(config: dict, workdir: Path, name: str, max_steps: int | None) -> float:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "lit_emergence",
        "fit",
        "--config",
        str(path),
        "--run_dir",
        str(workdir / name),
        "--trainer.enable_progress_bar=false",
    ]
    if max_steps is not None:
        command += ["--trainer.max_steps", str(max_steps)]
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=workdir,
        env={**os.environ, "WANDB_SILENT": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--max_steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument(
        "--measure",
        nargs="+",
        default=["CollisionDetectionMonitor", "AttentionDistanceMonitor"],
        help="class names of the callbacks whose overhead is measured",
    )
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())

    def keep(callback: dict, measured: bool) -> bool:
        if not callback["class_path"].startswith("lit_emergence.callbacks"):
            return True
        return measured and callback["class_path"].rsplit(".", 1)[-1] in args.measure

    callbacks = config["trainer"]["callbacks"]
    with_config = {
        **config,
        "trainer": {
            **config["trainer"],
            "callbacks": [c for c in callbacks if keep(c, measured=True)],
        },
    }
    without = {
        **config,
        "trainer": {
            **config["trainer"],
            "callbacks": [c for c in callbacks if keep(c, measured=False)],
        },
    }
    config = with_config
    removed = len(config["trainer"]["callbacks"]) - len(without["trainer"]["callbacks"])
    workdir = Path(tempfile.mkdtemp(prefix="callback-overhead-"))
    print(f"{removed} callbacks measured; work dir {workdir}; {os.cpu_count()} cores", flush=True)
    # Fill the data cache (one training step) so neither timed run simulates.
    fit(without, workdir, "warm-cache", max_steps=1)
    plain = fit(without, workdir, "without", args.max_steps)
    print(f"without callbacks: {plain:7.1f} s", flush=True)
    watched = fit(config, workdir, "with", args.max_steps)
    print(f"with callbacks   : {watched:7.1f} s")
    overhead = (watched - plain) / plain
    print(f"overhead         : {100 * overhead:+.1f} % (promise: <= {100 * MAX_OVERHEAD:.0f} %)")
    return 0 if overhead <= MAX_OVERHEAD else 1


if __name__ == "__main__":
    raise SystemExit(main())
