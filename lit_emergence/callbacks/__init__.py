"""Lightning callbacks that measure computational structure while a network trains.

Add them to any ``Trainer``; the model protocol they need is in
:mod:`lit_emergence.callbacks.protocol` and ``docs/callbacks.md``.
"""

from lit_emergence.callbacks.attention_distance import AttentionDistanceMonitor
from lit_emergence.callbacks.base import MeasurementCallback
from lit_emergence.callbacks.collision import CollisionDetectionMonitor
from lit_emergence.callbacks.emergence import EmergenceDetector
from lit_emergence.callbacks.gauge import GaugeInvariantMonitor
from lit_emergence.callbacks.llc import LLCMonitor
from lit_emergence.callbacks.measurement_schedule import LogSchedule
from lit_emergence.callbacks.probe import ProbeSet
from lit_emergence.callbacks.relation import (
    BatchRelation,
    Contact,
    PreviousToken,
    Relation,
    RelationScoreMonitor,
    SameGroup,
    WithinRadius,
)
from lit_emergence.callbacks.run_summary import RunSummary
from lit_emergence.callbacks.scheduled_checkpoint import ScheduledCheckpoint

__all__ = [
    "AttentionDistanceMonitor",
    "BatchRelation",
    "CollisionDetectionMonitor",
    "Contact",
    "EmergenceDetector",
    "GaugeInvariantMonitor",
    "LLCMonitor",
    "LogSchedule",
    "MeasurementCallback",
    "PreviousToken",
    "ProbeSet",
    "Relation",
    "RelationScoreMonitor",
    "RunSummary",
    "SameGroup",
    "ScheduledCheckpoint",
    "WithinRadius",
]
