"""Analysis of persisted histories and checkpoints: figures (more to come: fits, report)."""

from lit_emergence.analysis.figures import (
    AttentionPanel,
    attention_panels,
    figure_to_array,
    head_heatmap,
    loss_traces,
)

__all__ = ["AttentionPanel", "attention_panels", "figure_to_array", "head_heatmap", "loss_traces"]
