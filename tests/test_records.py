"""The run record: one layout, one reader, and the package's one-way dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from lit_emergence.records import load_run
from lit_emergence.records.csv import CSVHistory, read_rows
from lit_emergence.records.schema import (
    COLLISION,
    HISTORIES,
    LLC,
    classify_score,
    head_label,
    llc_component,
)

PACKAGE = Path(__file__).resolve().parents[1] / "lit_emergence"


# ----------------------------------------------------------------------------- the reader
def test_reader_ignores_a_torn_last_line_and_sets_malformed_rows_aside(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("step,value\n0,1.0\nx,2.0\n1,2.0,extra\n2,3.0\n3,4")
    found = read_rows(path)
    assert found.fieldnames == ["step", "value"]
    assert [row["step"] for row in found.rows] == ["0", "2"]
    assert found.torn
    # Line numbers count the header as line 1.
    assert found.malformed == [3, 4]
    # Reading changes nothing on disk (a run may still be writing).
    assert path.read_text().endswith("3,4")


def test_reader_of_a_missing_file_reads_no_rows(tmp_path):
    found = read_rows(tmp_path / "absent.csv")
    assert (found.fieldnames, found.rows, found.torn) == ([], [], False)


def test_writer_and_reader_round_trip_floats_exactly(tmp_path):
    history = CSVHistory(tmp_path / "h.csv", ["step", "value"])
    values = [0.1, 1 / 3, 2.0**-40, 1e300]
    history.append({"step": i, "value": v} for i, v in enumerate(values))
    assert [float(row["value"]) for row in read_rows(history.path)] == values


def test_load_run_reports_malformed_rows(tmp_path):
    emergence = tmp_path / "emergence"
    emergence.mkdir()
    header = ",".join(COLLISION.columns)
    good = "0,0.0,0,0,0.2,0.1,,none"
    (emergence / COLLISION.file).write_text(f"{header}\n{good}\n1,0.1,0,0\n")
    run = load_run(tmp_path)
    assert len(run.history("collision")) == 1
    [problem] = [p for p in run.problems if p.item == COLLISION.relative]
    assert "1 malformed rows left out (lines 3)" in problem.reason


# ----------------------------------------------------------------------------- names
def test_labels_and_classes():
    assert head_label(1, 6) == "L1H6"
    assert llc_component(1, 6) == "l1h6"
    assert [classify_score(s, 0.9, 0.5) for s in (0.95, 0.9, 0.6, 0.5, 0.1)] == [
        "true",
        "true",
        "partial",
        "partial",
        "none",
    ]
    assert classify_score(float("nan"), 0.9, 0.5) == ""
    assert LLC.columns[:2] == ("step", "lr_integral")


# ----------------------------------------------------------------------------- the layout
def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _string_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize("spec", list(HISTORIES.values()), ids=list(HISTORIES))
def test_each_history_file_name_is_spelled_once_in_the_package(spec):
    places = [
        path.relative_to(PACKAGE)
        for path in _python_files()
        for literal in _string_literals(path)
        if literal == spec.file
    ]
    assert places == [Path("records/schema.py")]


def test_no_module_is_over_700_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in _python_files()
        if (n := len(path.read_text().splitlines())) > 700
    }
    assert long == {}


def _imported_modules(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("records", ("lit_emergence.callbacks", "lit_emergence.report", "lightning")),
        ("report", ("lit_emergence.callbacks",)),
    ],
)
def test_imports_run_one_way(folder, forbidden):
    imported = _imported_modules(PACKAGE / folder)
    assert not {m for m in imported if m.startswith(forbidden)}


def test_reading_a_run_does_not_load_the_callbacks_or_lightning():
    code = (
        "import sys, lit_emergence.records, lit_emergence.report.build; "
        "loaded = [m for m in sys.modules if m.startswith(('lit_emergence.callbacks', "
        "'lightning.pytorch'))]; print(loaded); assert not loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
