"""The report's figures, drawn from persisted histories (matplotlib, Agg).

* :func:`figure1` — one head over training: collision score, attention-distance correlation
  (raw and on log-log axes with the fitted regimes) and the head's LLC (the paper's Figure 1);
* :func:`figure2` — every head's collision score over training, all runs, as a 2-D histogram;
* :func:`figure3` — attention drawn on particles for a true, a partial and a non-collision
  head, in free fall and settled (reuses :func:`lit_emergence.plotting.attention_panels`);
* :func:`figure5` — true and partial heads per block, per run;
* :func:`alignment_scores` — final collision scores of the heads lined up across runs by the
  gauge-invariant matching, beside the same runs lined up by head index;
* :func:`llc_curves` — every head's LLC (and the whole model's) over training.

Times are on a log axis, so the measurement at ``t = 0`` (the untrained model, and on the
gradient-flow axis also step 1, taken before any learning rate was applied) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # written to files, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lit_emergence.dynamics import ModelFit
from lit_emergence.plotting import AttentionPanel, attention_panels
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.run import History
from lit_emergence.records.schema import HEAD_CLASSES, WHOLE_MODEL, head_label, llc_component
from lit_emergence.report.alignment import Alignment
from lit_emergence.report.attention import STATES, AttentionSnapshot
from lit_emergence.report.fits import HeadFit
from lit_emergence.report.heads import HeadSummary
from lit_emergence.report.tables import number

TIME_LABELS: dict[str, str] = {
    "gradient_flow": "gradient-flow time  t = Σ lr  (cumulative learning rate)",
    "step": "optimizer step",
}
CLASS_COLOURS: dict[str, str] = {"true": "tab:red", "partial": "tab:orange", "none": "0.65"}
_FIT_STYLES = {"power_law": ("tab:blue", "--"), "broken_power_law": ("tab:green", "-.")}


def _positive(t: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Points drawable on a log time axis: t > 0 and finite everywhere."""
    keep = np.isfinite(t) & (t > 0)
    for value in values:
        keep &= np.isfinite(value)
    order = np.argsort(t[keep], kind="stable")
    return (t[keep][order], *(value[keep][order] for value in values))


def _fit_label(fit: ModelFit) -> str:
    if fit.model == "power_law":
        return f"power law α = {fit.params['alpha']:.3g} ± {fit.error('alpha'):.2g}"
    alpha1, alpha2 = fit.params["alpha1"], fit.params["alpha2"]
    return (
        f"broken power law α₁ = {alpha1:.3g}, α₂ = {alpha2:.3g}, "
        f"t_break = {fit.params['t_break']:.3g}"
    )


def _fitted_models(head_fit: HeadFit | None) -> list[ModelFit]:
    if head_fit is None:
        return []
    return [fit for fit in (head_fit.power_law, head_fit.broken) if fit is not None]


def _draw_fits(ax: Axes, head_fit: HeadFit | None, reference: float | None = None) -> None:
    """Draw the fitted curves over their window (as ``|O - reference|`` if given) and shade it.

    The power law and the broken power law are always drawn; the AICc-preferred model too when
    it is neither (e.g. a logistic jump), so the reader sees what the comparison preferred.
    """
    if head_fit is None or head_fit.window is None:
        return
    lo, hi = head_fit.window
    ax.axvspan(lo, hi, color="tab:blue", alpha=0.06, linewidth=0)
    grid = np.geomspace(lo, hi, 200)
    models = _fitted_models(head_fit)
    comparison = head_fit.comparison
    if comparison is not None and comparison.preferred not in _FIT_STYLES:
        models.append(comparison.fits[comparison.preferred])
    for fit in models:
        colour, style = _FIT_STYLES.get(fit.model, ("0.3", ":"))
        curve = fit.predict(grid)
        if reference is not None:
            curve = np.abs(curve - reference)
        label = _fit_label(fit) if fit.model in _FIT_STYLES else f"{fit.model} (AICc-preferred)"
        ax.plot(grid, curve, color=colour, linestyle=style, linewidth=1.6, label=label)
        if fit.model == "broken_power_law":
            ax.axvline(fit.params["t_break"], color=colour, linewidth=0.8, linestyle=":")


def _comparison_note(head_fit: HeadFit | None) -> str | None:
    """Two short lines on the model comparison and the window (a legend title)."""
    if head_fit is None:
        return None
    if head_fit.comparison is None:
        return "not fitted: " + "; ".join(head_fit.notes)[:80] if head_fit.notes else None
    delta = head_fit.delta_aicc_power_law
    text = f"AICc prefers {head_fit.comparison.preferred.replace('_', ' ')}"
    if math.isfinite(delta) and delta > 0:
        text += f" (power law +{delta:.1f})"
    return f"{text}\nwindow: {head_fit.window_source}"


def _legend(ax: Axes, loc: str, head_fit: HeadFit | None = None) -> None:
    legend = ax.legend(fontsize=7, loc=loc, title=_comparison_note(head_fit))
    legend.get_title().set_fontsize(7)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _log_time_axis(ax: Axes) -> None:
    """Log scale without minor tick labels (matplotlib crowds them on short ranges)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.25, which="both", linewidth=0.5)


def _events(ax: Axes, events: Sequence[tuple[float, str]], labelled: bool = False) -> None:
    """Mark emergence events as vertical lines (named along the top of the labelled panel).

    Events at the same time share one line and one label (e.g. ``power law + partial``).
    """
    names_at: dict[float, list[str]] = {}
    for time, name in events:
        if time > 0:
            names_at.setdefault(time, []).append(name.replace("_", " "))
    for time, names in names_at.items():
        ax.axvline(time, color="tab:purple", linewidth=0.9, alpha=0.6)
        if labelled:
            ax.text(
                time,
                0.99,
                " + ".join(names) + " ",
                transform=ax.get_xaxis_transform(),
                rotation=90,
                fontsize=6,
                color="tab:purple",
                va="top",
                ha="right",
                zorder=6,  # above the legend
            )


def _score_panel(
    ax: Axes,
    scores: History | None,
    head_fit: HeadFit | None,
    thresholds: tuple[float, float],
) -> None:
    if scores is None or not len(scores):
        _empty(ax, "no collision history")
        return
    t = scores.t
    for column, label in (
        ("score", "score (radius-based)"),
        ("strict", "strict (contacts)"),
        ("impact", "impact queries"),
    ):
        tt, value = _positive(t, scores.floats(column))
        main = column == "score"
        if tt.size:
            ax.plot(
                tt,
                value,
                "-o" if main else "-",
                markersize=3,
                linewidth=1.4 if main else 0.8,
                alpha=1.0 if main else 0.6,
                label=label,
            )
    _draw_fits(ax, head_fit)
    for level, name in zip(thresholds, ("true", "partial"), strict=True):
        ax.axhline(level, color=CLASS_COLOURS[name], linewidth=0.8, linestyle=":")
    _legend(ax, "upper left", head_fit)


def _distance_panels(
    ax_raw: Axes,
    ax_loglog: Axes,
    distances: History | None,
    head_fit: HeadFit | None,
) -> None:
    if distances is None or not len(distances):
        _empty(ax_raw, "no attention-distance history")
        _empty(ax_loglog, "no attention-distance history")
        return
    tt, g = _positive(distances.t, distances.floats("g_contact"))
    if not tt.size:
        _empty(ax_raw, "no G(contact) at t > 0")
        return
    ax_raw.plot(tt, g, "-o", markersize=3, color="black", linewidth=1.2, label="G(contact)")
    _draw_fits(ax_raw, head_fit)
    _legend(ax_raw, "upper left", head_fit)
    # Every curve is drawn as |O - G_inf| with one G_inf (the power law's asymptote), so the
    # curves are the models' predictions of O transformed exactly like the data.
    reference_fit = next(iter(_fitted_models(head_fit)), None)
    reference = reference_fit.offset if reference_fit is not None else float(g[-1])
    distance_to_limit = np.abs(g - reference)
    drawable = distance_to_limit > 0
    ax_loglog.loglog(
        tt[drawable],
        distance_to_limit[drawable],
        "o",
        markersize=4,
        color="black",
        label=f"|G − G∞|, G∞ = {reference:.3g}"
        + (" (power-law fit)" if reference_fit is not None else " (last value)"),
    )
    _draw_fits(ax_loglog, head_fit, reference=reference)
    _legend(ax_loglog, "lower left")


def _llc_panel(
    ax: Axes,
    label: str,
    llc_head: History | None,
    llc_model: History | None,
) -> None:
    drawn = False
    if llc_head is not None and len(llc_head):
        tt, mean, std = _positive(
            llc_head.t, llc_head.floats("llc_mean"), llc_head.floats("llc_std")
        )
        if tt.size:
            ax.errorbar(
                tt, mean, yerr=std, fmt="-o", markersize=4, capsize=2, color="tab:red", label=label
            )
            drawn = True
    ax.set_ylabel(f"LLC of {label} (weight-refined)")
    if llc_model is not None and len(llc_model):
        tt, mean = _positive(llc_model.t, llc_model.floats("llc_mean"))
        if tt.size:
            # The whole model's LLC is an order of magnitude larger: its own axis.
            twin = ax.twinx()
            twin.plot(tt, mean, "--s", markersize=3, color="0.45", linewidth=1.0)
            twin.set_ylabel("LLC of the whole model (grey, dashed)", color="0.4")
            drawn = True
    if drawn:
        ax.legend(fontsize=7, loc="upper left")
    else:
        _empty(ax, "no LLC history")


def figure1(
    run_name: str,
    summary: HeadSummary,
    fits: Mapping[str, HeadFit],
    scores: History | None,
    distances: History | None,
    llc_head: History | None,
    llc_model: History | None,
    time_label: str,
    thresholds: tuple[float, float],
    events: Sequence[tuple[float, str]] = (),
) -> Figure:
    """The paper's Figure 1 for one head.

    Args:
        run_name: Run name (title).
        summary: The head's final values.
        fits: Fits of this head by observable name (``"score"``, ``"g_contact"``).
        scores: The head's rows of the collision history.
        distances: The head's rows of the attention-distance history.
        llc_head: The head's rows of the LLC history.
        llc_model: The whole model's rows of the LLC history.
        time_label: Label of the time axis (the histories' ``t`` is on it).
        thresholds: ``(true, partial)`` score thresholds, drawn as lines.
        events: ``(time, label)`` markers (emergence detections), drawn as vertical lines.

    Returns:
        The figure: (a) collision scores, (b) G(contact), (c) its approach to the asymptote
        on log-log axes, (d) the head's and the whole model's LLC; fits over shaded windows.

    Raises:
        Unavailable: If neither the collision nor the distance history has the head.
    """
    if (scores is None or not len(scores)) and (distances is None or not len(distances)):
        raise Unavailable(f"no collision or distance history for {summary.label}")
    fig, axes = plt.subplots(4, 1, figsize=(7.5, 12.0), dpi=110, sharex=True)
    ax_score, ax_raw, ax_loglog, ax_llc = axes
    _score_panel(ax_score, scores, fits.get("score"), thresholds)
    ax_score.set_ylabel("collision-detection score")
    ax_score.set_ylim(0.0, 1.02)
    ax_score.set_title(
        "(a) collision detection emerges: growth fit over the shaded window", fontsize=9
    )
    _distance_panels(ax_raw, ax_loglog, distances, fits.get("g_contact"))
    ax_raw.set_ylabel("G(contact)")
    ax_raw.set_title(
        "(b) attention-distance correlation at contact distance, G(contact)", fontsize=9
    )
    ax_loglog.set_ylabel("|G(contact) − G∞|")
    ax_loglog.set_title(
        "(c) its approach to the asymptote on log-log axes, fitted regimes", fontsize=9
    )
    _llc_panel(ax_llc, summary.label, llc_head, llc_model)
    ax_llc.set_title("(d) local learning coefficient", fontsize=9)
    for ax in axes:
        _log_time_axis(ax)
        _events(ax, events, labelled=ax is ax_score)
    ax_llc.set_xlabel(time_label)
    fig.suptitle(
        f"{run_name}: head {summary.label} ({summary.head_class or 'unclassified'}, "
        f"final score {summary.score:.2f})",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


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
) -> Figure:
    """Every head's collision score over training, all runs, as a 2-D histogram.

    One column per measurement time (runs sharing a schedule share columns), ``score_bins``
    rows over [0, 1]; the colour counts head-measurements on a log scale, so that the small
    clusters of partial heads stay visible beside the dense ones.

    Args:
        histories: ``(run name, collision history)`` of every run.
        time_label: Label of the time axis (the histories' ``t`` is on it).
        thresholds: ``(true, partial)`` thresholds, drawn as dotted lines.
        score_bins: Bins of the score axis.

    Returns:
        The figure.

    Raises:
        Unavailable: Without any score at t > 0.
    """
    times, scores = [], []
    for _, history in histories:
        t, score = _positive(history.t, history.floats("score"))
        times.append(t)
        scores.append(score)
    t = np.concatenate(times) if times else np.empty(0)
    score = np.concatenate(scores) if scores else np.empty(0)
    if t.size == 0:
        raise Unavailable("no collision scores at t > 0")
    counts, x_edges, y_edges = np.histogram2d(
        t, np.clip(score, 0.0, 1.0), bins=[_log_edges(t), np.linspace(0.0, 1.0, score_bins + 1)]
    )
    fig, ax = plt.subplots(figsize=(8.0, 4.6), dpi=110)
    mesh = ax.pcolormesh(
        x_edges,
        y_edges,
        np.ma.masked_equal(counts.T, 0),
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(2.0, counts.max())),
        shading="flat",
    )
    fig.colorbar(mesh, ax=ax, label="heads in the bin")
    for level, name in zip(thresholds or (), ("true", "partial"), strict=False):
        ax.axhline(level, color=CLASS_COLOURS[name], linewidth=0.9, linestyle=":")
        ax.text(x_edges[0], level, f" {name}", color=CLASS_COLOURS[name], fontsize=7, va="bottom")
    _log_time_axis(ax)
    ax.grid(False, which="both")  # the bins are the grid
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(time_label)
    ax.set_ylabel("collision-detection score")
    heads = sum(
        len(set(zip(h.columns["layer"], h.columns["head"], strict=True))) for _, h in histories
    )
    names = ", ".join(name for name, _ in histories)
    if len(names) > 60:
        names = f"{len(histories)} runs"
    ax.set_title(
        f"Collision-detection score of every head over training ({heads} heads; {names})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def figure3(
    run_name: str,
    snapshot: AttentionSnapshot,
    examples: Mapping[str, HeadSummary | None],
    box: tuple[float, float],
) -> Figure:
    """Attention on particles for a true, a partial and a non-collision head (Figure 3).

    Args:
        run_name: Run name (title).
        snapshot: Attention of the checkpoint on the free-fall and settled samples.
        examples: One head per class (``None`` where the run has none).
        box: (width, height) of the simulation box.

    Returns:
        The figure: one row per available example, free fall left, settled right.

    Raises:
        Unavailable: If no example head exists.
    """
    panels = []
    layers, heads = snapshot.attention.shape[1:3]
    for head_class in reversed(HEAD_CLASSES):  # strongest first
        summary = examples.get(head_class)
        if summary is None:
            continue
        if summary.layer >= layers or summary.head >= heads:
            raise Unavailable(
                f"the histories name {summary.label}, but the checkpoint's model has {layers} "
                f"blocks of {heads} heads: they are not from the same model"
            )
        for sample, state in enumerate(STATES):
            panels.append(
                AttentionPanel(
                    positions=snapshot.positions[sample],
                    radii=snapshot.radii[sample],
                    attention=snapshot.attention[sample, summary.layer, summary.head],
                    contacts=snapshot.contacts[sample] if snapshot.contacts is not None else None,
                    title=f"{summary.label}: {head_class} (score {summary.score:.2f})\n"
                    f"{state} (frame {int(snapshot.frames[sample])})",
                )
            )
    if not panels:
        raise Unavailable("no head with a final collision score")
    figure = attention_panels(panels, box, columns=2)
    figure.suptitle(
        f"{run_name}, step {snapshot.step}\nattention of i on j as a line (opacity = weight)"
        "\nred dotted: contacts",
        fontsize=9,
    )
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.55 / figure.get_figheight()))
    return figure


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
        dpi=110,
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
        dpi=110,
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
    fig, (ax_model, ax_heads) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=110, sharex=True)
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


def save(fig: Figure, path: str) -> None:
    """Write a figure as PNG and close it."""
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)
