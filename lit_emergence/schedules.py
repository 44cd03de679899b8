"""Old name of :mod:`lit_emergence.lr_schedules`, kept for one release.

Configs saved by earlier versions name ``lit_emergence.schedules.WarmupCosineLR``; they still
load (with a deprecation warning). New configs use ``lit_emergence.lr_schedules``.
"""

import warnings

from lit_emergence.lr_schedules import WarmupCosineLR

warnings.warn(
    "lit_emergence.schedules is renamed lit_emergence.lr_schedules; change the class_path in "
    "your config (the old name goes in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["WarmupCosineLR"]
