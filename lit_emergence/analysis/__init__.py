"""Analysis of persisted histories and checkpoints: figures and dynamics fits.

The fits live in :mod:`lit_emergence.analysis.dynamics` (import them from there).
"""

from lit_emergence.analysis.figures import (
    AttentionPanel,
    attention_panels,
    figure_to_array,
    head_heatmap,
    loss_traces,
)

__all__ = ["AttentionPanel", "attention_panels", "figure_to_array", "head_heatmap", "loss_traces"]
