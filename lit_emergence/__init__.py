"""lit_emergence: watch computational structure emerge in a learned particle simulator.

Reproduces and generalises *Emergence of Computational Structure in a Neural Network
Physics Simulator* (arXiv:2504.11830): a soft-sphere particle simulator, a transformer whose
attention passes information between particles, and Lightning callbacks that measure the
structure as it emerges.

The names below are imported on first use (PEP 562), so ``import lit_emergence`` stays cheap:
it does not import torch or Lightning until one of them is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that provides it.
_EXPORTS: dict[str, str] = {
    "ParticleTransformer": "lit_emergence.model",
    "LearnedSimulator": "lit_emergence.module",
    "ParticleDataModule": "lit_emergence.data",
    "SimulationConfig": "lit_emergence.physics",
    "CollisionDetectionMonitor": "lit_emergence.callbacks",
    "AttentionDistanceMonitor": "lit_emergence.callbacks",
    "LLCMonitor": "lit_emergence.callbacks",
    "EmergenceDetector": "lit_emergence.callbacks",
    "GaugeInvariantMonitor": "lit_emergence.callbacks",
    "LogSchedule": "lit_emergence.callbacks",
    "RelationScoreMonitor": "lit_emergence.callbacks",
}

__all__ = [
    "AttentionDistanceMonitor",
    "CollisionDetectionMonitor",
    "EmergenceDetector",
    "GaugeInvariantMonitor",
    "LLCMonitor",
    "LearnedSimulator",
    "LogSchedule",
    "ParticleDataModule",
    "ParticleTransformer",
    "RelationScoreMonitor",
    "SimulationConfig",
]

if TYPE_CHECKING:
    from lit_emergence.callbacks import (
        AttentionDistanceMonitor,
        CollisionDetectionMonitor,
        EmergenceDetector,
        GaugeInvariantMonitor,
        LLCMonitor,
        LogSchedule,
        RelationScoreMonitor,
    )
    from lit_emergence.data import ParticleDataModule
    from lit_emergence.model import ParticleTransformer
    from lit_emergence.module import LearnedSimulator
    from lit_emergence.physics import SimulationConfig


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access, then cache it here.

    Args:
        name: The attribute asked for.

    Returns:
        The object :data:`__all__` names.

    Raises:
        AttributeError: If ``name`` is not one of the public names.

    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported public names."""
    return sorted(set(globals()) | set(__all__))
