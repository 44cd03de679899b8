"""The report's figures, drawn from persisted histories (matplotlib, Agg).

* :func:`figure1` — one head over training (the paper's Figure 1): collision score,
  attention-distance correlation (raw and its approach on log-log axes, with the fitted
  regimes), the LLC of the head and of the whole model, the score per band of query height, and
  the head's attention on particles at one step in each of its phases by height;
* :func:`figure2` — every head's collision score over training, all runs, as a 2-D histogram
  (optionally above the uniform-attention level);
* :func:`figure3` — attention drawn on particles for a true, a partial and a non-collision
  head, in free fall and settled (through :func:`lit_emergence.plotting.draw_attention`);
* :func:`figure5` — true and partial heads per block, per run;
* :func:`alignment_scores` — final collision scores of the heads lined up across runs by the
  gauge-invariant matching, beside the same runs lined up by head index;
* :func:`llc_curves` — every head's LLC (and the whole model's) over training;
* :func:`llc_emergence` — each collision head's LLC through its emergence window, every run,
  each estimate coloured by its verdict.

Figures 1 to 3 come with a caption (:class:`Captioned`), which ``report.md`` prints under them.
Times are on a log axis, so the measurement at ``t = 0`` (the untrained model, and on the
gradient-flow axis also step 1, taken before any learning rate was applied) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # written to files, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from lit_emergence.plotting import (
    CONTACT_COLOUR,
    AttentionPanel,
    attention_weight_key,
    draw_attention,
)
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import History
from lit_emergence.records.schema import (
    HEAD_CLASSES,
    WHOLE_MODEL,
    head_label,
    llc_component,
)
from lit_emergence.report.alignment import Alignment
from lit_emergence.report.attention import STATES, AttentionSnapshot
from lit_emergence.report.figure1 import Figure1Data, PhaseView, figure1
from lit_emergence.report.figure_style import (
    _PHASE_COLOURS,
    CLASS_COLOURS,
    CLASS_NAMES,
    DPI,
    EVENT_STYLES,
    TIME_LABELS,
    Captioned,
    _empty,
    _frameless,
    _log_time_axis,
    _positive,
)
from lit_emergence.report.heads import HeadSummary
from lit_emergence.report.llc_windows import MIN_TREND_POINTS, HeadLLCWindow
from lit_emergence.report.tables import number

__all__ = [
    "TIME_LABELS",
    "Captioned",
    "Figure1Data",
    "PhaseView",
    "alignment_scores",
    "figure1",
    "figure2",
    "figure3",
    "figure5",
    "llc_curves",
    "llc_emergence",
    "save",
]


def _log_edges(times: np.ndarray) -> np.ndarray:
    """Bin edges on a log axis with one bin per distinct measurement time."""
    distinct = np.unique(np.round(np.log10(times), 6))
    if distinct.size == 1:
        return 10.0 ** np.array([distinct[0] - 0.5, distinct[0] + 0.5])
    middles = 0.5 * (distinct[1:] + distinct[:-1])
    first = distinct[0] - (middles[0] - distinct[0])
    last = distinct[-1] + (distinct[-1] - middles[-1])
    return 10.0 ** np.concatenate([[first], middles, [last]])


def figure2(
    histories: Sequence[tuple[str, History]],
    time_label: str,
    thresholds: tuple[float, float] | None = None,
    score_bins: int = 50,
    uniform: Mapping[str, float] | None = None,
) -> Captioned:
    """Every head's collision score over training, all runs, as a 2-D histogram.

    One column per measurement time (runs sharing a schedule share columns), ``score_bins``
    rows per unit of score; the colour counts head-measurements on a log scale, so that the
    small clusters of partial heads stay visible beside the dense ones.

    Args:
        histories: ``(run name, collision history)`` of every run.
        time_label: Label of the time axis (the histories' ``t`` is on it).
        thresholds: ``(true, partial)`` thresholds, drawn as dotted lines.
        score_bins: Bins per unit of score.
        uniform: Run name -> the score of uniform attention on its probe set: given, the
            figure shows ``(score - uniform) / (1 - uniform)`` (uniform attention at 0, a
            perfect collision head at 1); runs without a finite value are left out.

    Returns:
        The figure and its caption.

    Raises:
        Unavailable: Without any score at t > 0 (or, with ``uniform``, without a run that has
            its uniform score).
    """
    times, scores, used = [], [], []
    for name, history in histories:
        t, score = _positive(history.t, history.floats("score"))
        if uniform is not None:
            zero = uniform.get(name, math.nan)
            if not math.isfinite(zero) or zero >= 1.0:
                continue
            score = (score - zero) / (1.0 - zero)
        times.append(t)
        scores.append(score)
        used.append((name, history))
    t = np.concatenate(times) if times else np.empty(0)
    score = np.concatenate(scores) if scores else np.empty(0)
    if t.size == 0:
        raise Unavailable(
            "no run with a uniform-attention score (it needs the run's probe set)"
            if uniform is not None and histories
            else "no collision scores at t > 0"
        )
    low = min(0.0, math.floor(float(np.min(score)) * 10.0) / 10.0)
    score_edges = np.linspace(low, 1.0, round((1.0 - low) * score_bins) + 1)
    counts, x_edges, y_edges = np.histogram2d(
        t, np.clip(score, low, 1.0), bins=[_log_edges(t), score_edges]
    )
    fig, ax = plt.subplots(figsize=(8.0, 4.6), dpi=DPI)
    mesh = ax.pcolormesh(
        x_edges,
        y_edges,
        np.ma.masked_equal(counts.T, 0),
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(2.0, counts.max())),
        shading="flat",
    )
    fig.colorbar(mesh, ax=ax, label="head-measurements in the bin")
    # Thresholds are on the raw score; above uniform, they are placed with the first run's u.
    zero = uniform[used[0][0]] if uniform is not None else 0.0
    for level, name in zip(thresholds or (), ("true", "partial"), strict=False):
        colour = CLASS_COLOURS[name]
        shown = (level - zero) / (1.0 - zero)
        text = f" {name} ({level:g} raw)" if uniform is not None else f" {name}"
        ax.axhline(shown, color=colour, linewidth=0.9, linestyle=":")
        ax.text(x_edges[0], shown, text, color=colour, fontsize=7, va="bottom")
    if uniform is not None:
        ax.axhline(0.0, color="white", linewidth=0.8, linestyle="--")
        ax.text(x_edges[0], 0.0, " uniform attention", color="0.3", fontsize=7, va="bottom")
    _log_time_axis(ax)
    ax.grid(False, which="both")  # the bins are the grid
    ax.set_ylim(low, 1.0)
    ax.set_xlabel(time_label)
    ax.set_ylabel(
        "score above uniform: (score − u) / (1 − u)"
        if uniform is not None
        else "collision-detection score"
    )
    heads = sum(len(set(zip(h.columns["layer"], h.columns["head"], strict=True))) for _, h in used)
    names = ", ".join(name for name, _ in used)
    if len(names) > 60:
        names = f"{len(used)} runs"
    ax.set_title(
        f"Collision-detection score of every head over training ({heads} heads; {names})",
        fontsize=9,
    )
    fig.tight_layout()
    caption = (
        f"Collision-detection score of every head of {names} ({heads} heads) at every "
        "measurement, as a 2-D histogram: one column per measurement time, colour = number of "
        "head-measurements in the bin (log scale); dotted: the true and partial thresholds."
    )
    if uniform is not None:
        values = ", ".join(f"{uniform[name]:.3g}" for name, _ in used)
        caption += (
            " The score is shown above the uniform-attention level, (score − u) / (1 − u), "
            f"with u the score of uniform attention on each run's probe set ({values}): "
            "uniform attention sits at 0 (dashed), a perfect collision head at 1; the "
            f"thresholds are placed with the u of {used[0][0]}."
        )
        left_out = [name for name, _ in histories if name not in dict(used)]
        if left_out:
            caption += f" Left out for want of a probe set: {', '.join(left_out)}."
    return Captioned(fig, caption)


def figure3(
    run_name: str,
    snapshot: AttentionSnapshot,
    examples: Mapping[str, HeadSummary | None],
    box: tuple[float, float],
) -> Captioned:
    """Attention on particles for a true, a partial and a non-collision head (Figure 3).

    One column per example head (strongest first), the free-fall sample on top, the settled
    pile below (the box shown up to just above the pile); the contacts are drawn over the
    attention lines, and a colour bar reads a line's opacity as its weight.

    Args:
        run_name: Run name (title).
        snapshot: Attention of the checkpoint on the free-fall and settled samples.
        examples: One head per class (``None`` where the run has none).
        box: (width, height) of the simulation box.

    Returns:
        The figure and its caption.

    Raises:
        Unavailable: If no example head exists.
    """
    layers, heads = snapshot.attention.shape[1:3]
    chosen = [
        (head_class, summary)
        for head_class in reversed(HEAD_CLASSES)  # strongest first
        if (summary := examples.get(head_class)) is not None
    ]
    for _, summary in chosen:
        if summary.layer >= layers or summary.head >= heads:
            raise Unavailable(
                f"the histories name {summary.label}, but the checkpoint's model has {layers} "
                f"blocks of {heads} heads: they are not from the same model"
            )
    if not chosen:
        raise Unavailable("no head with a final collision score")
    width, height = box
    pile = float(np.max(snapshot.positions[1][:, 1] + snapshot.radii[1])) + 1.0
    shown = (height, min(height, pile))
    panel_width = 2.5
    fig = plt.figure(
        figsize=(
            panel_width * len(chosen) + 1.2,
            panel_width * (shown[0] + shown[1] + 2.0) / (width + 1.0) + 1.6,
        ),
        dpi=200,
        layout="constrained",
    )
    grid = fig.add_gridspec(
        2,
        len(chosen) + 1,
        width_ratios=(*([1.0] * len(chosen)), 0.07),
        height_ratios=(shown[0] + 1.0, shown[1] + 1.0),
    )
    contacts = snapshot.samples.contacts
    for column, (head_class, summary) in enumerate(chosen):
        for row, state in enumerate(STATES):
            ax = fig.add_subplot(grid[row, column])
            panel = AttentionPanel(
                positions=snapshot.positions[row],
                radii=snapshot.radii[row],
                attention=snapshot.attention[row, summary.layer, summary.head],
                contacts=snapshot.contacts[row] if snapshot.contacts is not None else None,
                title=f"{summary.label}: {CLASS_NAMES[head_class]}\n(score {summary.score:.2f})"
                if row == 0
                else "",
            )
            draw_attention(ax, panel, box, contacts_on_top=True, height=shown[row])
            _frameless(ax)
            if column == 0:
                ax.set_ylabel(
                    f"{state}\nframe {int(snapshot.frames[row])}, {contacts[row]} contacts",
                    fontsize=8,
                )
    attention_weight_key(fig, fig.add_subplot(grid[:, -1]))
    fig.legend(
        handles=[
            Line2D([], [], color="black", linewidth=2.6, label="attention of i on j"),
            Line2D([], [], color=CONTACT_COLOUR, linewidth=1.0, label="contact (drawn on top)"),
        ],
        loc="outside lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(f"{run_name}, step {snapshot.step}: attention on particles", fontsize=10)
    frames = snapshot.samples.frames
    names = ", ".join(
        f"the {CLASS_NAMES[head_class]} {summary.label} ({summary.score:.2f})"
        for head_class, summary in chosen
    )
    caption = (
        f"Attention of every particle on every other at step {snapshot.step} of {run_name}, "
        f"for {names}, as lines whose opacity is the attention weight (colour bar). Top: a "
        f"free-fall sample (frame {frames[0]}, {contacts[0]} contacts: "
        f"{snapshot.samples.choice}); bottom: the settled pile (frame {frames[1]}, the latest "
        f"in the probe set, {contacts[1]} contacts; the box is shown up to height {shown[1]:.3g} "
        f"of {height:g}). Red: the ground-truth contacts, drawn over the attention lines, so a "
        "dark border around a red line is attention on a contact. Samples from "
        f"{snapshot.samples.source}."
    )
    return Captioned(fig, caption)


def figure5(counts: Sequence[tuple[str, Mapping[str, Sequence[int]]]]) -> Figure:
    """Number of true and partial collision heads in each block, one panel per run.

    Args:
        counts: ``(run name, {"true": per block, "partial": per block})`` of every run.

    Returns:
        The figure.

    Raises:
        Unavailable: Without any run.
    """
    if not counts:
        raise Unavailable("no run with collision scores")
    columns = min(len(counts), 5)
    rows = -(-len(counts) // columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(1.0 + 2.6 * columns, 0.9 + 2.6 * rows),
        dpi=DPI,
        sharey=True,
        squeeze=False,
    )
    top = max(
        max((t + p for t, p in zip(c["true"], c["partial"], strict=True)), default=0)
        for _, c in counts
    )
    for ax, (name, per_block) in zip(axes.flat, counts, strict=False):
        blocks = np.arange(len(per_block["true"]))
        true, partial = np.asarray(per_block["true"]), np.asarray(per_block["partial"])
        ax.bar(blocks, true, color=CLASS_COLOURS["true"], label="true")
        ax.bar(blocks, partial, bottom=true, color=CLASS_COLOURS["partial"], label="partial")
        ax.set_xticks(blocks, [str(b) for b in blocks])
        ax.set_xlabel("block")
        ax.set_title(name, fontsize=8)
        ax.set_ylim(0, max(1, top) + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(counts) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("heads at the end of training")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("True and partial collision-detection heads per block", fontsize=10)
    fig.tight_layout()
    return fig


def alignment_scores(alignment: Alignment, thresholds: tuple[float, float]) -> Figure:
    """Final collision score of the heads lined up across runs (rows: reference heads).

    Two panels with the same rows (the reference run's heads) and columns (the runs, the
    reference first): left, each run's head matched to the reference head by the
    gauge-invariant matching (named in the cell); right, the head with the same index. A good
    matching makes the rows of the left panel even in colour.

    Args:
        alignment: The heads of the runs lined up with the reference's.
        thresholds: ``(true, partial)`` score thresholds, marked on the colour bar.

    Returns:
        The figure.
    """
    rows, columns = len(alignment.heads), len(alignment.runs)
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(2.0 + 2 * max(3.2, 0.4 + 0.95 * columns), 1.9 + 0.3 * rows),
        dpi=DPI,
        sharey=True,
        layout="constrained",
    )
    matched_heads = alignment.head_grid()
    run_labels = [
        f"{run.name}\n(reference)" if index == 0 else run.name
        for index, run in enumerate(alignment.runs)
    ]
    for ax, matched in zip(axes, (True, False), strict=True):
        scores = alignment.score_grid(matched=matched)
        image = ax.imshow(
            np.ma.masked_invalid(scores), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto"
        )
        for (row, column), score in np.ndenumerate(scores):
            text = number(score, 2) if math.isfinite(score) else "–"
            if matched:
                text = f"H{matched_heads[row, column]}  {text}"
            ax.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if score >= 0.6 else "white",
            )
        for boundary in range(1, alignment.shape.n_layers):
            ax.axhline(boundary * alignment.shape.n_heads - 0.5, color="white", linewidth=3)
        ax.set_xticks(range(columns), run_labels, rotation=30, ha="right", fontsize=8)
        ax.tick_params(length=0)
        ax.set_title(
            "matched by gauge-invariant features\n(cell: matched head of the block, score)"
            if matched
            else "paired by head index (head h with head h)\n(cell: score)",
            fontsize=9,
        )
    axes[0].set_yticks(range(rows), [head_label(layer, head) for layer, head in alignment.heads])
    axes[0].set_ylabel("head of the reference run")
    colour_bar = fig.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    colour_bar.set_label("final collision-detection score")
    for level, name in zip(thresholds, ("true", "partial"), strict=True):
        colour_bar.ax.axhline(level, color=CLASS_COLOURS[name], linewidth=2)
        colour_bar.ax.text(
            -0.1,
            level,
            name,
            ha="right",
            va="center",
            fontsize=7,
            color=CLASS_COLOURS[name],
            transform=colour_bar.ax.get_yaxis_transform(),
        )
    fig.suptitle(
        "Final collision score of aligned heads across runs "
        f"(reference {alignment.reference.name})",
        fontsize=10,
    )
    return fig


def llc_curves(
    run_name: str, llc: History, summaries: Sequence[HeadSummary], time_label: str
) -> Figure:
    """The whole model's and every head's weight-refined LLC over training.

    Args:
        run_name: Run name (title).
        llc: The run's LLC history.
        summaries: Final values of every head (for the class and the label).
        time_label: Label of the time axis (the histories' ``t`` is on it).

    Returns:
        The figure: the whole model (left), every head coloured by its final class (right).

    Raises:
        Unavailable: If the history has no row at t > 0.
    """
    fig, (ax_model, ax_heads) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=DPI, sharex=True)
    model = llc.for_component(WHOLE_MODEL)
    tt, mean, std = _positive(model.t, model.floats("llc_mean"), model.floats("llc_std"))
    drawn = tt.size
    if tt.size:
        ax_model.errorbar(tt, mean, yerr=std, fmt="-s", color="black", capsize=2, markersize=4)
    else:
        _empty(ax_model, "no whole-model estimate")
    labelled: set[str] = set()
    # Non-collision heads first, so the collision heads are drawn on top of them.
    for summary in sorted(summaries, key=lambda s: (s.head_class != "none", s.score)):
        rows = llc.for_component(llc_component(summary.layer, summary.head))
        tt, mean = _positive(rows.t, rows.floats("llc_mean"))
        if not tt.size:
            continue
        drawn += tt.size
        head_class = summary.head_class or "none"
        ax_heads.plot(
            tt,
            mean,
            "-o",
            markersize=3,
            color=CLASS_COLOURS.get(head_class, CLASS_COLOURS["none"]),
            linewidth=1.4 if head_class != "none" else 0.8,
            label=f"{head_class} heads" if head_class not in labelled else None,
        )
        labelled.add(head_class)
        if head_class != "none":
            ax_heads.annotate(
                summary.label,
                (tt[-1], mean[-1]),
                fontsize=7,
                xytext=(3, 0),
                textcoords="offset points",
            )
    if not drawn:
        plt.close(fig)
        raise Unavailable("no LLC estimate at t > 0")
    if labelled:
        ax_heads.legend(fontsize=8, loc="upper left")
    ax_model.set_ylabel("LLC (chain mean ± std)")
    ax_model.set_title("whole model", fontsize=9)
    ax_heads.set_ylabel("LLC (weight-refined, chain mean)")
    ax_heads.set_title("every head, coloured by its final class", fontsize=9)
    for ax in (ax_model, ax_heads):
        _log_time_axis(ax)
        ax.set_xlabel(time_label)
    fig.suptitle(f"{run_name}: local learning coefficient", fontsize=10)
    fig.tight_layout()
    return fig


#: How each verdict's estimates are drawn in :func:`llc_emergence`: colour, marker, filled.
_VERDICT_STYLES: dict[str, tuple[str, str, bool]] = {
    "ok": ("black", "o", True),
    "not-converged": ("tab:orange", "o", True),
    "localisation-dominated": ("tab:blue", "s", False),
    "not-at-minimum": ("tab:red", "v", False),
    "diverged": ("0.5", "x", True),
}
_VERDICT_MEANINGS = {
    "ok": "ok",
    "not-converged": "not converged (trace still moving)",
    "localisation-dominated": "localisation-dominated",
    "not-at-minimum": "not at a minimum (< 0 by 2 SE)",
    "diverged": "diverged",
}
# Below this |LLC| the y axis is linear, above it logarithmic (estimates span -10^3..10^4).
_LLC_LINEAR_RANGE = 10.0


def llc_emergence(windows: Sequence[HeadLLCWindow], time_label: str) -> Captioned:
    """Each collision head's LLC through its emergence window, one panel per head.

    Args:
        windows: The heads' LLC windows (:func:`lit_emergence.report.llc_windows.head_windows`),
            grouped by run (one row of panels per run).
        time_label: Label of the time axis.

    Returns:
        The figure and its caption.

    Raises:
        Unavailable: If no head has :data:`MIN_TREND_POINTS` estimates at t > 0 (a history
            measured a few times per run, as the monitor's light defaults do, cannot show a
            window).
    """
    dense = [w for w in windows if np.sum(w.t > 0) >= MIN_TREND_POINTS]
    if not dense:
        raise Unavailable(
            f"no collision head has {MIN_TREND_POINTS} per-head LLC estimates at t > 0 "
            "(measure them densely after training: lit-emergence llc RUN_DIR --per_head)"
        )
    runs = list(dict.fromkeys(w.run for w in dense))
    per_run = [[w for w in dense if w.run == run] for run in runs]
    columns = max(len(mine) for mine in per_run)
    fig, axes = plt.subplots(
        len(runs),
        columns,
        figsize=(3.1 * columns, 2.5 * len(runs) + 0.9),
        dpi=DPI,
        squeeze=False,
    )
    times = np.concatenate([w.t[w.t > 0] for w in dense])
    limits = (float(times.min()) / 1.3, float(times.max()) * 1.3)
    seen: dict[str, Any] = {}
    for row, mine in enumerate(per_run):
        for column in range(columns):
            ax = axes[row, column]
            if column >= len(mine):
                ax.set_visible(False)
                continue
            _llc_window_panel(ax, mine[column], seen)
            ax.set_xlim(*limits)
            if column == 0:
                ax.set_ylabel("LLC (± 2 SE)", fontsize=8)
    order = [*(k for k in _VERDICT_STYLES if k in seen), "phase", "onset", "true"]
    handles = [seen[k] for k in order if k in seen]
    legend = fig.legend(
        handles=handles, loc="upper center", ncol=min(4, len(handles)), fontsize=7.5
    )
    fig.supxlabel(time_label, fontsize=9)
    # Leave the legend its measured height above the panels.
    fig.canvas.draw()
    legend_height = legend.get_window_extent().height / fig.dpi + 0.1
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_height / fig.get_figheight()))
    caption = (
        "Each partial or true head's weight-refined LLC over training (one row per run), each "
        "estimate ± two standard errors of the chain mean, coloured by its verdict; where a "
        f"panel's estimates reach past ±{2 * _LLC_LINEAR_RANGE:g}, its y axis is linear within "
        f"±{_LLC_LINEAR_RANGE:g} and logarithmic beyond. Shaded: the head's "
        "first phase by height; dotted: the detector's onset; solid: the head became true. "
        "Only black and orange points measure an LLC: a red triangle lies below zero by more "
        "than two standard errors (the chains found lower loss than the checkpoint: no "
        "minimum there)."
    )
    return Captioned(fig, caption)


def _llc_window_panel(ax: Any, window: HeadLLCWindow, seen: dict[str, Any]) -> None:
    """One head's panel of :func:`llc_emergence`; adds its legend handles to ``seen``."""
    drawable = window.t > 0
    for verdict, (colour, marker, filled) in _VERDICT_STYLES.items():
        keep = drawable & (window.verdicts == verdict)
        if not np.any(keep):
            continue
        errors = np.where(np.isfinite(window.sem[keep]), 2 * window.sem[keep], 0.0)
        drawn = ax.errorbar(
            window.t[keep],
            window.mean[keep],
            yerr=errors,
            fmt=marker,
            color=colour,
            markerfacecolor=colour if filled else "none",
            markersize=3.5,
            elinewidth=0.7,
            capsize=1.5,
            label=_VERDICT_MEANINGS[verdict],
        )
        seen.setdefault(verdict, drawn)
    other = drawable & ~np.isin(window.verdicts, list(_VERDICT_STYLES))
    if np.any(other):
        ax.plot(window.t[other], window.mean[other], "o", color="0.7", markersize=3)
    ax.plot(window.t[drawable], window.mean[drawable], "-", color="0.6", linewidth=0.6, zorder=0)
    last = float(np.max(window.t[drawable]))
    phase = window.first_phase
    if phase is not None and phase.start > 0:
        shade = ax.axvspan(
            phase.start,
            min(phase.end, last * 1.05),
            color=_PHASE_COLOURS["first phase"],
            alpha=0.15,
            linewidth=0,
            label=f"first phase by height (true below {phase.height:.2g} of the box only)",
        )
        seen.setdefault("phase", shade)
    for name, event in (("onset", window.onset), ("true", window.became_true)):
        if event is None or not event[1] > 0:
            continue
        colour, style, text = EVENT_STYLES[name]
        ax.axvline(event[1], color=colour, linestyle=style, linewidth=1.0)
        seen.setdefault(name, Line2D([], [], color=colour, linestyle=style, label=text))
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    reach = np.abs(window.mean[drawable]) + np.nan_to_num(2 * window.sem[drawable])
    if np.nanmax(reach) > 2 * _LLC_LINEAR_RANGE:
        ax.set_yscale("symlog", linthresh=_LLC_LINEAR_RANGE)
        # Plain numbers (10, -100), not the symlog default's 8.90163 x 10^0.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    _log_time_axis(ax)
    ax.tick_params(labelsize=7)
    summary = window.summary
    ax.set_title(
        f"{window.run} {window.label} ({summary.head_class}, {summary.score:.2f})",
        fontsize=8,
    )


def save(fig: Figure, path: str) -> None:
    """Write a figure as PNG and close it."""
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)
