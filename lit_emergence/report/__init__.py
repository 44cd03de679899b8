"""The reproduction report: the paper's figures and the exponent table from run directories.

``lit-emergence report RUN_DIR [RUN_DIR ...]`` (see ``docs/report.md``) or, from Python,
:func:`build_report`. Run directories are read through :mod:`lit_emergence.records`. One
concept per module:

* :mod:`~lit_emergence.report.checkpoint` — a run's checkpoint, loaded once per report;
* :mod:`~lit_emergence.report.heads` — every head at the end of training, example heads;
* :mod:`~lit_emergence.report.fits` — power-law fits per head and observable (the exponent
  table), through :mod:`lit_emergence.dynamics`;
* :mod:`~lit_emergence.report.probe` — a run's probe set: the free-fall and settled samples
  drawn on, and the uniform-attention score (the score's zero point);
* :mod:`~lit_emergence.report.attention` — a checkpoint's attention on those samples
  (Figures 1 and 3);
* :mod:`~lit_emergence.report.events` — the emergence events and a head's phases by height;
* :mod:`~lit_emergence.report.alignment` — the heads of several runs lined up with the first
  run's by gauge-invariant head matching (:func:`align_runs`);
* :mod:`~lit_emergence.report.figures` — Figures 1, 2, 3, 5 (1-3 with captions), the aligned
  heads and the LLC curves;
* :mod:`~lit_emergence.report.tables` — CSV and Markdown tables;
* :mod:`~lit_emergence.report.document` — ``report.md``;
* :mod:`~lit_emergence.report.build` — orchestration (:func:`build_report`);
* :mod:`~lit_emergence.report.upload` — optional W&B upload;
* :mod:`~lit_emergence.report.cli` — the command line.
"""

from lit_emergence.report.alignment import Alignment, align_runs
from lit_emergence.report.build import DEFAULT_OBSERVABLES, build_report
from lit_emergence.report.fits import HeadFit, fit_head
from lit_emergence.report.heads import HeadSummary, summarize_heads
from lit_emergence.report.result import ReportResult

__all__ = [
    "DEFAULT_OBSERVABLES",
    "Alignment",
    "HeadFit",
    "HeadSummary",
    "ReportResult",
    "align_runs",
    "build_report",
    "fit_head",
    "summarize_heads",
]
