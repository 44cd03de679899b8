"""The public face of the package: lazy top-level names, subpackage ``__all__``, import layers."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import lit_emergence

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lit_emergence"

# Top-level name -> the module that defines it.
TOP_LEVEL = {
    "ParticleTransformer": "lit_emergence.model",
    "LearnedSimulator": "lit_emergence.module",
    "ParticleDataModule": "lit_emergence.data.datamodule",
    "SimulationConfig": "lit_emergence.physics.config",
    "CollisionDetectionMonitor": "lit_emergence.callbacks",
    "AttentionDistanceMonitor": "lit_emergence.callbacks",
    "LLCMonitor": "lit_emergence.callbacks",
    "EmergenceDetector": "lit_emergence.callbacks",
    "GaugeInvariantMonitor": "lit_emergence.callbacks",
    "LogSchedule": "lit_emergence.callbacks",
    "RelationScoreMonitor": "lit_emergence.callbacks",
}
SUBPACKAGES = ("physics", "data", "llc", "gauge", "functional", "metrics", "heads")


def test_top_level_all_lists_exactly_the_public_names():
    assert sorted(lit_emergence.__all__) == sorted(TOP_LEVEL)
    assert set(lit_emergence.__all__) <= set(dir(lit_emergence))


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_top_level_names_are_the_defining_objects(name):
    expected = getattr(importlib.import_module(TOP_LEVEL[name]), name)
    assert getattr(lit_emergence, name) is expected
    namespace: dict = {}
    exec(f"from lit_emergence import {name}", namespace)
    assert namespace[name] is expected


def test_unknown_top_level_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = lit_emergence.NoSuchThing
    assert not hasattr(lit_emergence, "Workspace")


def test_import_is_cheap():
    code = (
        "import sys, lit_emergence; "
        "heavy = sorted(m for m in ('lightning', 'torch') if m in sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_all_matches_its_exports(name):
    package = importlib.import_module(f"lit_emergence.{name}")
    public = {
        key
        for key, value in vars(package).items()
        if not key.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert len(package.__all__) == len(set(package.__all__))
    assert set(package.__all__) == public
    for key in package.__all__:
        assert getattr(package, key) is not None


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("lit_emergence.physics.workspace", "Workspace"),
        ("lit_emergence.physics.simulator", "advance"),
        ("lit_emergence.physics.contact", "contact_parameters"),
        ("lit_emergence.physics.config", "contact_duration"),
        ("lit_emergence.physics.config", "lattice_shape"),
        ("lit_emergence.data.dataset", "OneStepDataset"),
        ("lit_emergence.llc.sampler", "LangevinKernel"),
        ("lit_emergence.gauge.heads", "read_heads"),
        ("lit_emergence.functional.collision", "collision_score_statistics"),
    ],
)
def test_internals_stay_importable_from_their_modules(module, name):
    assert hasattr(importlib.import_module(module), name)


def _physics_imports(path: Path) -> set[str]:
    """Sibling physics modules that ``path`` imports anywhere (top level, functions, guards)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["lit_emergence", "physics"] and len(parts) == 3:
                found.add(parts[2])
    return found


def test_physics_modules_import_one_way():
    modules = {p.stem: _physics_imports(p) for p in (PACKAGE / "physics").glob("*.py")}
    modules.pop("__init__")
    # Depth-first search for a cycle, counting TYPE_CHECKING and function-level imports too.
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in modules.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in modules:
        visit(module, ())
    assert modules["state"] == set()
    assert modules["config"] == set()


def test_old_schedule_module_name_still_loads_with_a_deprecation_warning():
    # Configs saved before the rename name lit_emergence.schedules.WarmupCosineLR.
    sys.modules.pop("lit_emergence.schedules", None)
    with pytest.warns(DeprecationWarning, match="lit_emergence.lr_schedules"):
        module = importlib.import_module("lit_emergence.schedules")
    from lit_emergence.lr_schedules import WarmupCosineLR

    assert module.WarmupCosineLR is WarmupCosineLR
