"""Optional upload of a written report to Weights & Biases.

One W&B run with ``job_type="report"``: every figure as an image (captioned), every table as a
``wandb.Table``, and ``report.md`` with the CSV files as run files. Its local files go to
``<report>/wandb/``; an offline run is uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from lit_emergence.records.errors import Unavailable
from lit_emergence.report.result import ReportResult


def upload_report(
    result: ReportResult,
    mode: Literal["offline", "online"],
    project: str = "lit_emergence",
) -> Path:
    """Log a report's figures and tables to a new W&B run.

    Args:
        result: What :func:`~lit_emergence.report.build_report` wrote.
        mode: ``"offline"`` (files only, ``wandb sync`` later) or ``"online"``.
        project: W&B project.

    Returns:
        The W&B run's local directory.

    Raises:
        Unavailable: If wandb is not installed.
    """
    try:
        import wandb
    except ImportError as error:
        raise Unavailable(
            "wandb is not installed: pip install 'lit_emergence[wandb]' or use --wandb disabled"
        ) from error
    out_dir = result.out_dir.resolve()
    run = wandb.init(
        project=project,
        job_type="report",
        name=f"report-{out_dir.name}"
        if out_dir.name != "report"
        else f"report-{out_dir.parent.name}",
        dir=str(out_dir),
        mode=mode,
        config={"runs": result.runs},
        reinit="finish_previous",
    )
    try:
        run.log(
            {
                f"figures/{path.stem}": wandb.Image(
                    str(path),
                    caption=f"{title}. {result.captions[title]}"
                    if title in result.captions
                    else title,
                )
                for title, path in result.figures
            }
        )
        for name, rows in result.tables.items():
            columns = result.columns[name]
            table = wandb.Table(
                columns=columns,
                data=[[row.get(column) for column in columns] for row in rows],
                allow_mixed_types=True,
            )
            run.log({f"tables/{name}": table})
        # Copied into the run's own folder first: saving a file from outside it makes wandb
        # symlink it and warn about every file.
        run_files = Path(run.dir)
        for path in result.files.values():
            if path.suffix in (".md", ".csv"):
                copy = run_files / path.name
                shutil.copyfile(path, copy)
                run.save(str(copy), base_path=str(run_files), policy="now")
        return Path(run.dir).parent
    finally:
        run.finish()
