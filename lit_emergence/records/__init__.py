"""The run record: the layout of a run directory, its CSV histories, and reading a run back.

The bottom of the package's data flow: the callbacks write through it, detection and the
report read through it, and it imports neither. One concept per module:

* :mod:`~lit_emergence.records.schema` — file names, columns, head and LLC component labels,
  head classes and their default thresholds, time axes;
* :mod:`~lit_emergence.records.files` — crash-safe writes (atomic replace, fsynced append),
  whose failures name their file;
* :mod:`~lit_emergence.records.csv` — the appending history writer and the one reader;
* :mod:`~lit_emergence.records.run` — :func:`load_run`: a run directory as :class:`Run` and
  :class:`History` objects (:func:`load_runs`: several, uniquely named);
* :mod:`~lit_emergence.records.errors` — a path that is no run, a named history no run has,
  an item that cannot be made.
"""

from lit_emergence.records.csv import CSVHistory, read_rows
from lit_emergence.records.errors import MissingHistoryError, NotARunError, Problem, Unavailable
from lit_emergence.records.run import History, Run, load_run, load_runs
from lit_emergence.records.schema import TimeAxis, head_label, llc_component

__all__ = [
    "CSVHistory",
    "History",
    "MissingHistoryError",
    "NotARunError",
    "Problem",
    "Run",
    "TimeAxis",
    "Unavailable",
    "head_label",
    "llc_component",
    "load_run",
    "load_runs",
    "read_rows",
]
