"""Figures of attention structure (matplotlib, headless).

* :func:`head_heatmap` — a value per [layer, head] as an annotated grid.
* :func:`loss_traces` — SGLD loss traces of LLC chains (calibration at a glance).
* :func:`attention_panels` — the paper's Figure 3 picture: discs drawn in their box, and the
  attention of every particle on every other as a line whose opacity is the attention weight;
  one panel per (head, state), e.g. the most and least collision-like heads in free fall and
  in the settled pile.
* :func:`draw_attention` — one such panel on a given axes (the report lays out its own
  figures), optionally with the contacts drawn as a red core over the attention lines, and
  :func:`attention_weight_key` — the colour bar that reads a line's opacity as a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written or logged, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.colorbar import Colorbar
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from lit_emergence.records.schema import WHOLE_MODEL


def head_heatmap(
    values: np.ndarray,
    title: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    colorbar_label: str = "",
) -> Figure:
    """Draw a (layers, heads) array as an annotated heatmap.

    Args:
        values: Array of shape (L, H); NaN cells are left blank.
        title: Figure title.
        vmin: Lower end of the colour scale.
        vmax: Upper end of the colour scale.
        cmap: Matplotlib colour map.
        colorbar_label: Label of the colour bar.

    Returns:
        The figure (close it with ``plt.close(fig)`` when done).
    """
    values = np.asarray(values, dtype=float)
    layers, heads = values.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * heads, 0.8 + 0.5 * layers), dpi=100)
    image = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    for layer in range(layers):
        for head in range(heads):
            value = values[layer, head]
            if np.isfinite(value):
                bright = (value - vmin) / max(vmax - vmin, 1e-12) > 0.6
                ax.text(
                    head,
                    layer,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if bright else "white",
                )
    ax.set_xticks(range(heads), [str(h) for h in range(heads)])
    ax.set_yticks(range(layers), [str(lay) for lay in range(layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    return fig


#: Attention lines are black with opacity = weight; this colour map says so in a colour bar.
ATTENTION_CMAP = LinearSegmentedColormap.from_list(
    "attention_opacity", [(0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)]
)
#: Colour of the ground-truth contacts.
CONTACT_COLOUR = "tab:red"


@dataclass
class AttentionPanel:
    """One panel of :func:`attention_panels`.

    Attributes:
        positions: (N, 2) disc centres.
        radii: (N,) disc radii.
        attention: (N, N) attention of query i (row) on key j (column).
        title: Panel title.
        contacts: Optional (N, N) bool ground-truth contacts, drawn as thin red segments.
        levels: Heights at which to draw thin dashed horizontal lines (e.g. the edges of the
            bands of query height).
    """

    positions: np.ndarray
    radii: np.ndarray
    attention: np.ndarray
    title: str
    contacts: np.ndarray | None = None
    levels: Sequence[float] = ()


def draw_attention(
    ax: Axes,
    panel: AttentionPanel,
    box: tuple[float, float],
    *,
    contacts_on_top: bool = False,
    height: float | None = None,
) -> None:
    """Draw the discs, the attention lines (opacity = weight) and the contacts on ``ax``.

    Args:
        ax: Where to draw.
        panel: What to draw.
        box: (width, height) of the simulation box (floor at y = 0).
        contacts_on_top: Draw the attention lines wide and each contact as a solid red core
            over them, so that a contact shows whether or not it is attended (a dark border
            around the red core means attention on it); off, contacts are thin dotted lines.
        height: Show the box only up to this height (e.g. a settled pile), default all of it.
    """
    positions = np.asarray(panel.positions, dtype=float)
    attention = np.asarray(panel.attention, dtype=float)
    n = len(positions)
    discs = PatchCollection(
        [Circle(tuple(p), r) for p, r in zip(positions, panel.radii, strict=True)],
        facecolor="#d9e4f2",
        edgecolor="#35507a",
        linewidth=0.8,
        zorder=1,
    )
    ax.add_collection(discs)
    # One segment per ordered pair; opacity = attention weight (both directions overlap).
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    segments = np.stack([positions[i], positions[j]], axis=1)
    colours = ATTENTION_CMAP(np.clip(attention[i, j], 0.0, 1.0))
    ax.add_collection(
        LineCollection(
            segments, colors=colours, linewidths=2.6 if contacts_on_top else 1.4, zorder=2
        )
    )
    if panel.contacts is not None:
        ci, cj = np.nonzero(np.triu(np.asarray(panel.contacts, dtype=bool), 1))
        if len(ci):
            contact_segments = np.stack([positions[ci], positions[cj]], axis=1)
            ax.add_collection(
                LineCollection(
                    contact_segments,
                    colors=CONTACT_COLOUR,
                    linewidths=1.0 if contacts_on_top else 0.6,
                    linestyles="solid" if contacts_on_top else "dotted",
                    zorder=3,
                )
            )
    width, box_height = box
    top = box_height if height is None else min(height, box_height)
    for level in panel.levels:
        if 0 < level < top:
            ax.plot([0, width], [level, level], color="tab:blue", linewidth=0.6, linestyle="--")
    if top < box_height:  # an open box: it goes on above the shown part
        ax.plot([0, 0, width, width], [top, 0, 0, top], color="grey", linewidth=0.8)
    else:
        outline = ([0, width, width, 0, 0], [0, 0, box_height, box_height, 0])
        ax.plot(*outline, color="grey", linewidth=0.8)
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-0.5, top + 0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(panel.title, fontsize=8)


def attention_weight_key(fig: Figure, cax: Axes) -> Colorbar:
    """A colour bar on ``cax`` reading the opacity of an attention line as its weight."""
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), ATTENTION_CMAP), cax=cax)
    bar.set_label("attention weight (line opacity)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def attention_panels(
    panels: Sequence[AttentionPanel], box: tuple[float, float], columns: int = 2, title: str = ""
) -> Figure:
    """Draw attention on particles, one panel per entry (the paper's Figure 3 picture).

    Args:
        panels: The panels, filled row by row.
        box: (width, height) of the simulation box.
        columns: Panels per row.
        title: Figure title.

    Returns:
        The figure.
    """
    rows = max(1, -(-len(panels) // columns))
    width, height = box
    panel_height = 4.0
    panel_width = panel_height * (width + 1) / (height + 1)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * panel_width + 0.4, rows * panel_height + 0.5),
        dpi=100,
        squeeze=False,
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_attention(ax, panel, box)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def loss_traces(traces: dict[str, Any], title: str = "", highlight: str = WHOLE_MODEL) -> Figure:
    """Draw SGLD loss traces: per component, the chain-mean of ``L(w_t) - L(w*)`` over steps.

    A good trace rises and then plateaus; one still climbing at the end means the step size,
    localisation or ``n_beta`` need attention (see ``docs/llc.md``).

    Args:
        traces: Component name -> (chains, steps) loss traces with ``w_0 = w*``.
        title: Figure title.
        highlight: Component drawn thick and black (its chains drawn individually).

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for name, trace in traces.items():
        trace = np.asarray(trace, dtype=float)
        rise = trace - trace[:, :1]
        if name == highlight:
            for chain in rise:
                ax.plot(chain, color="black", linewidth=0.5, alpha=0.4)
            ax.plot(np.nanmean(rise, axis=0), color="black", linewidth=2.0, label=name)
        else:
            ax.plot(np.nanmean(rise, axis=0), linewidth=0.8, alpha=0.7)
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("L(w_t) - L(w*)")
    ax.set_title(title or "SGLD loss traces", fontsize=9)
    if highlight in traces:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array and close it."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return rgba[..., :3].copy()
