r"""``lit-emergence llc calibrate``: sweep step size and localisation on a run's checkpoint.

One vectorised call (:func:`~lit_emergence.llc.calibration_grid`, through
:meth:`LLCMonitor.estimate <lit_emergence.callbacks.LLCMonitor.estimate>`: the monitor's
minibatches, budget, ``n_beta`` and seed) samples every pair of a grid of step sizes ``eps``
and localisations ``gamma``; every entry shares the same noise, so differences between
settings are not Monte Carlo noise. Each entry gets the estimator's diagnostics and verdict,
and two paired checks from its neighbours in the grid:

* **localisation check**: the entry at the next smaller ``gamma`` (same ``eps``) plays the
  part of the monitor's ``gamma / localization_check`` run
  (:func:`~lit_emergence.llc.result.attach_localization_check`): a rise of more than 10 % (and
  two standard errors of the paired chains) makes the verdict ``localisation-dominated``. The
  default grid is spaced by 4, the monitor's default factor. The smallest ``gamma`` of the grid
  has no such check.
* **step comparison** (reported, not a condition): the estimate at the next smaller ``eps``
  (same ``gamma``) and the paired relative change; ``step_check`` says ``differs`` when that
  one is ``ok`` and the change exceeds 10 % and two standard errors of the paired chains. A
  difference has two readings that the sweep cannot tell apart: the larger step is biased
  (the MALA acceptance sees step-size errors of about 20 % and more only), or the smaller one
  has not equilibrated in the budget (its relaxation takes four times the steps; the trace
  test misses slow drifts in short budgets). A longer budget (``--num_draws``) tells which.

**The rule**: an entry is *eligible* when its verdict is ``ok``: no diverged chain, not above
the regular bound, MALA acceptance at least 0.9, flat trace, and not localisation-dominated
against the next smaller ``gamma``; with several components, a setting is eligible when it is
for every one. The choice is the smallest ``gamma`` with an eligible setting (the least
localisation bias the budget allows) and, at it, the largest eligible ``eps`` (the fastest
mixing the acceptance still vouches for). Without an eligible setting nothing is chosen; the
table says why each failed. When the chosen entry's ``step_check`` is ``differs`` the command
says so.

Writes ``RUN_DIR/llc/calibration.png`` (one panel per ``gamma``, one line per ``eps``: the
chain mean of ``n_beta [L_b(w_t) - L_b(w*)]``, whose plateau is the estimate),
``calibration.csv`` and ``.md`` (every entry with its diagnostics), and ``calibration.yaml``,
the ``LLCMonitor`` snippet of the chosen settings (also printed).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lit_emergence.llc.diagnostics import localization_shift
from lit_emergence.llc.offline import BadInputError, LLCSetup
from lit_emergence.llc.result import LLCResult, attach_localization_check
from lit_emergence.llc.settings import DEFAULT_LOCALIZATION, calibration_grid, default_step_size
from lit_emergence.records.errors import Unavailable
from lit_emergence.records.files import replace_text, replaced
from lit_emergence.records.schema import CHECKPOINT_DIR, WHOLE_MODEL
from lit_emergence.report.checkpoint import scheduled_checkpoints

__all__ = [
    "CALIBRATION_DIR",
    "CALIBRATION_FILES",
    "DEFAULT_LOCALIZATIONS",
    "DEFAULT_STEP_FACTORS",
    "MAX_STEP_SHIFT",
    "Calibration",
    "GridPoint",
    "assess",
    "calibrate_run",
    "calibration_figure",
    "default_step_sizes",
    "write_calibration",
    "yaml_snippet",
]

#: Folder of a run's calibration outputs.
CALIBRATION_DIR = "llc"
#: The files written there, by kind.
CALIBRATION_FILES = {
    "figure": "calibration.png",
    "csv": "calibration.csv",
    "markdown": "calibration.md",
    "yaml": "calibration.yaml",
}
#: Default step sizes, as multiples of the default step ``0.05 / (n_beta + 1)``: four decades
#: down (stiff models need far smaller steps, ``docs/llc.md``) and one factor up.
DEFAULT_STEP_FACTORS = (1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0, 4.0)
#: Default localisations, spaced by the monitor's ``localization_check`` factor of 4.
DEFAULT_LOCALIZATIONS = (0.25, 1.0, 4.0, 16.0)
#: Relative change of the estimate from the next smaller step above which ``step_check`` says
#: ``differs``.
MAX_STEP_SHIFT = 0.1
#: Standard errors of the paired chains the step change must also exceed to count.
STEP_SIGNIFICANCE = 2.0

COLUMNS = (
    "component",
    "step_size",
    "localization",
    "llc_mean",
    "llc_std",
    "acceptance",
    "trace_rise",
    "still_climbing",
    "num_diverged",
    "exceeds_regular_bound",
    "llc_smaller_localization",
    "localization_shift",
    "llc_smaller_step",
    "step_shift",
    "verdict",
    "step_check",
    "eligible",
    "chosen",
)


def default_step_sizes(n_beta: float) -> list[float]:
    """:data:`DEFAULT_STEP_FACTORS` times the default step at ``gamma = 1``."""
    base = default_step_size(n_beta, DEFAULT_LOCALIZATION)
    return [base * factor for factor in DEFAULT_STEP_FACTORS]


@dataclass(frozen=True)
class GridPoint:
    """One setting of one component in a calibration sweep.

    Attributes:
        component: ``"model"`` or ``"l<layer>h<head>"``.
        step_size: Its ``eps``.
        localization: Its ``gamma``.
        result: The estimate, with the localisation check of the next smaller ``gamma``
            attached where there is one.
        smaller_step: ``llc_mean`` at the next smaller ``eps`` (NaN for the smallest).
        step_shift: ``(llc(smaller eps) - llc) / llc(smaller eps)`` over paired chains.
        step_check: ``"agrees"``, ``"differs"``, or ``""`` (no ``ok`` smaller step to compare
            with); reported, not a condition of :attr:`eligible`.
    """

    component: str
    step_size: float
    localization: float
    result: LLCResult
    smaller_step: float = math.nan
    step_shift: float = math.nan
    step_check: str = ""

    @property
    def eligible(self) -> bool:
        """Verdict ``ok`` (the localisation check against the next smaller ``gamma`` included)."""
        return self.result.verdict == "ok"


@dataclass
class Calibration:
    """A calibration sweep, its assessment and its choice.

    Attributes:
        points: Every (component, step size, localisation), grid order.
        step_sizes: The step sizes swept, ascending.
        localizations: The localisations swept, ascending.
        chosen: ``(step_size, localization)``, or None when no setting is eligible.
        step: The checkpoint's optimizer step.
        n_beta: ``n_beta`` of the sweep.
        context: Run, checkpoint and budget, for the table and the snippet.
    """

    points: list[GridPoint]
    step_sizes: list[float]
    localizations: list[float]
    chosen: tuple[float, float] | None
    step: int
    n_beta: float
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def components(self) -> list[str]:
        """The components swept, in order."""
        return list(dict.fromkeys(point.component for point in self.points))

    def point(self, component: str, step_size: float, localization: float) -> GridPoint:
        """The entry of one setting."""
        for point in self.points:
            if (point.component, point.step_size, point.localization) == (
                component,
                step_size,
                localization,
            ):
                return point
        raise KeyError((component, step_size, localization))


def grid(
    components: Mapping[str, Any], step_sizes: Sequence[float], localizations: Sequence[float]
) -> tuple[dict[str, Any], dict[str, float], dict[str, float], dict[str, str]]:
    """Every component at every setting, as one :func:`estimate_llc_many` call's arguments.

    Returns:
        ``(restrictions, step_size, localization, component)`` keyed alike.

    Raises:
        ValueError: If two settings print alike (their entries would share a name).
    """
    restrictions: dict[str, Any] = {}
    step_size: dict[str, float] = {}
    localization: dict[str, float] = {}
    component: dict[str, str] = {}
    for name, restriction in components.items():
        entries, eps, gamma = calibration_grid(restriction, step_sizes, localizations, f"{name}:")
        restrictions.update(entries)
        step_size.update(eps)
        localization.update(gamma)
        component.update(dict.fromkeys(entries, name))
    if len(restrictions) != len(components) * len(step_sizes) * len(localizations):
        raise ValueError(
            "two of the step sizes or localisations are equal to 6 significant digits; give "
            "distinct values"
        )
    return restrictions, step_size, localization, component


def _paired_shift(result: LLCResult, reference: LLCResult) -> tuple[float, float]:
    """Relative change of ``result`` from ``reference`` over their paired chains, and its z."""
    return localization_shift(result.llc_per_chain, reference.llc_per_chain)


def assess(
    results: Mapping[str, LLCResult],
    step_size: Mapping[str, float],
    localization: Mapping[str, float],
    component: Mapping[str, str],
    *,
    step: int,
    n_beta: float,
) -> Calibration:
    """Attach the paired checks to every entry of a sweep and choose (the module's rule).

    Args:
        results: The sweep's results, keyed as :func:`grid` made them.
        step_size: Entry -> its step size.
        localization: Entry -> its localisation.
        component: Entry -> its component.
        step: The checkpoint's optimizer step.
        n_beta: ``n_beta`` of the sweep.

    Returns:
        The :class:`Calibration`.
    """
    by_setting = {(component[k], step_size[k], localization[k]): r for k, r in results.items()}
    names = list(dict.fromkeys(component.values()))
    epsilons = sorted(set(step_size.values()))
    gammas = sorted(set(localization.values()))
    # Localisation check: each gamma against the next smaller one, at the same step size.
    checked: dict[tuple[str, float, float], LLCResult] = {}
    for (name, eps, gamma), result in by_setting.items():
        index = gammas.index(gamma)
        if index > 0:
            result = attach_localization_check(result, by_setting[name, eps, gammas[index - 1]])
        checked[name, eps, gamma] = result
    # Step comparison: each step size against the next smaller one, when that one is ok.
    points: dict[tuple[str, float, float], GridPoint] = {}
    for (name, eps, gamma), result in checked.items():
        index = epsilons.index(eps)
        smaller, shift, check = math.nan, math.nan, ""
        if index > 0:
            reference = checked[name, epsilons[index - 1], gamma]
            smaller = reference.llc_mean
            shift, z = _paired_shift(result, reference)
            if reference.verdict == "ok" and math.isfinite(shift):
                significant = abs(shift) > MAX_STEP_SHIFT and abs(z) > STEP_SIGNIFICANCE
                check = "differs" if significant else "agrees"
        points[name, eps, gamma] = GridPoint(name, eps, gamma, result, smaller, shift, check)
    chosen = None
    for gamma in gammas:
        eligible = [
            eps for eps in epsilons if all(points[name, eps, gamma].eligible for name in names)
        ]
        if eligible:
            chosen = (max(eligible), gamma)
            break
    order = [(name, eps, gamma) for name in names for eps in epsilons for gamma in gammas]
    return Calibration(
        points=[points[key] for key in order if key in points],
        step_sizes=epsilons,
        localizations=gammas,
        chosen=chosen,
        step=step,
        n_beta=n_beta,
    )


def _record(point: GridPoint, chosen: tuple[float, float] | None) -> dict[str, Any]:
    result = point.result
    return {
        "component": point.component,
        "step_size": point.step_size,
        "localization": point.localization,
        "llc_mean": result.llc_mean,
        "llc_std": result.llc_std,
        "acceptance": result.acceptance,
        "trace_rise": result.trace_rise,
        "still_climbing": result.still_climbing,
        "num_diverged": result.num_diverged,
        "exceeds_regular_bound": result.exceeds_regular_bound,
        "llc_smaller_localization": result.llc_weak_localization,
        "localization_shift": result.localization_shift,
        "llc_smaller_step": point.smaller_step,
        "step_shift": point.step_shift,
        "verdict": result.verdict,
        "step_check": point.step_check,
        "eligible": point.eligible,
        "chosen": chosen == (point.step_size, point.localization),
    }


def _csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _cell(value) for key, value in record.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: floats at full precision, NaN empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def rule_text() -> str:
    """The selection rule in words (the table's header and the command's output)."""
    return (
        "eligible: verdict ok (no divergence, MALA acceptance >= 0.9, flat trace, not "
        "localisation-dominated against the next smaller gamma); chosen: the smallest gamma "
        "with an eligible step size, at its largest eligible one (every component eligible)"
    )


def _markdown(calibration: Calibration, records: Sequence[Mapping[str, Any]]) -> str:
    from lit_emergence.report.tables import markdown_table, number, plus_minus

    context = calibration.context
    lines = [
        f"# LLC calibration: {context.get('run', '')} at step {calibration.step}",
        "",
        f"Checkpoint `{context.get('checkpoint', '')}`; {context.get('budget', '')}; "
        f"n_beta = {calibration.n_beta:.6g}.",
        "",
        f"Rule: {rule_text()}.",
        "",
    ]
    if calibration.chosen is None:
        lines.append("**No setting is eligible** (see the verdicts below).")
    else:
        eps, gamma = calibration.chosen
        lines.append(f"**Chosen: step_size = {eps:.4g}, localization = {gamma:g}.**")
    lines.append("")
    header = ["component", "ε", "γ", "LLC", "acceptance", "trace rise", "diverged"]
    header += ["at smaller γ (shift)", "at smaller ε (shift)", "verdict", "step check", "chosen"]

    def shifted(value: Any, shift: Any) -> str:
        text = number(value)
        return f"{text} ({number(100 * shift, 2)} %)" if text and math.isfinite(shift) else text

    rows = [
        [
            r["component"],
            number(r["step_size"]),
            number(r["localization"]),
            plus_minus(r["llc_mean"], r["llc_std"]),
            number(r["acceptance"]),
            number(r["trace_rise"], 2),
            str(r["num_diverged"]),
            shifted(r["llc_smaller_localization"], r["localization_shift"]),
            shifted(r["llc_smaller_step"], r["step_shift"]),
            r["verdict"],
            r["step_check"],
            "**yes**" if r["chosen"] else "",
        ]
        for r in records
    ]
    return "\n".join(lines) + "\n" + markdown_table(header, rows)


def yaml_snippet(calibration: Calibration, arguments: Mapping[str, Any]) -> str:
    """The ``LLCMonitor`` entry of a LightningCLI config with the chosen settings.

    Args:
        calibration: A sweep with a choice.
        arguments: The monitor's other settings as the sweep used them (budget, minibatches,
            ``n_beta`` rule, sampler).

    Returns:
        YAML text (``trainer.callbacks`` with one ``class_path``/``init_args`` entry) that
        ``lit-emergence fit --config`` and ``lit-emergence llc --settings`` read.

    Raises:
        ValueError: Without a chosen setting.
    """
    if calibration.chosen is None:
        raise ValueError("no setting was chosen; nothing to write")
    eps, gamma = calibration.chosen
    init_args: dict[str, Any] = {"step_size": float(f"{eps:.6g}"), "localization": float(gamma)}
    for key in ("num_chains", "num_draws", "num_burnin", "batch_size", "num_batches"):
        init_args[key] = int(arguments[key])
    # Explicit, so the snippet's monitor draws the very probe set the sweep used.
    init_args["num_probe_samples"] = int(arguments["num_probe_samples"])
    # Always written: merged into a run config whose monitor sets another rule (the quickstart's
    # B/ln(B)), an omitted n_beta would keep that rule under the step size chosen for this one.
    init_args["n_beta"] = arguments.get("n_beta") or "n/ln(n)"
    if arguments.get("num_samples") is not None:
        init_args["num_samples"] = int(arguments["num_samples"])
    if arguments.get("sampler", "sgld") != "sgld":
        init_args["sampler"] = arguments["sampler"]
    context = calibration.context
    head = (
        f"# lit-emergence llc calibrate: {context.get('run', '')} at step {calibration.step} "
        f"({', '.join(calibration.components)}; {context.get('budget', '')}).\n"
        "# Merge into the run config's LLCMonitor entry (keep its schedule); "
        "docs/llc.md explains the rule.\n"
    )
    body = {
        "trainer": {
            "callbacks": [
                {"class_path": "lit_emergence.callbacks.LLCMonitor", "init_args": init_args}
            ]
        }
    }
    return head + yaml.safe_dump(body, sort_keys=False)


def calibration_figure(calibration: Calibration, component: str = WHOLE_MODEL) -> Any:
    """Loss traces of one component: a panel per localisation, a line per step size.

    Each line is the chain mean of ``n_beta [L_b(w_t) - L_b(w*)]`` over the SGLD steps (its
    plateau after the shaded burn-in is the estimate); the legend gives every line's verdict,
    MALA acceptance and estimate, and marks the chosen setting.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt  # through lit_emergence.plotting's Agg backend

    import lit_emergence.plotting  # noqa: F401 (selects the headless backend)

    if component not in calibration.components:
        component = calibration.components[0]
    gammas = calibration.localizations
    columns = min(len(gammas), 2)
    rows = math.ceil(len(gammas) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.4 * columns, 6.4 * rows), dpi=100, squeeze=False
    )
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(calibration.step_sizes)))
    curves: dict[tuple[float, float], np.ndarray] = {}
    for eps in calibration.step_sizes:
        for gamma in gammas:
            result = calibration.point(component, eps, gamma).result
            batch = np.arange(result.loss_trace.shape[1]) % result.init_losses.numel()
            rise = result.loss_trace.numpy() - result.init_losses.numpy()[batch]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # steps where every chain died
                curves[eps, gamma] = calibration.n_beta * np.nanmean(
                    np.where(np.isfinite(rise), rise, np.nan), axis=0
                )
    # The vertical range of the eligible settings (else of those that did not diverge):
    # the others may leave the frame, their legend entries say why.
    for keep in (
        lambda point: point.eligible,
        lambda point: point.result.verdict != "diverged",
        lambda point: True,
    ):
        values = [
            curve[np.isfinite(curve)]
            for (eps, gamma), curve in curves.items()
            if keep(calibration.point(component, eps, gamma))
        ]
        values = np.concatenate(values) if values else np.zeros(0)
        if values.size:
            break
    low, high = (float(min(0.0, values.min())), float(values.max())) if values.size else (0, 1)
    span = max(high - low, 1e-12)
    first = calibration.point(component, calibration.step_sizes[0], gammas[0]).result
    burnin = int(first.hyperparameters.get("num_burnin", 0))
    for index, gamma in enumerate(gammas):
        ax = axes[index // columns][index % columns]
        ax.axvspan(0, burnin, color="0.92", zorder=0, label="burn-in (not in the estimate)")
        for colour, eps in zip(colours, calibration.step_sizes, strict=True):
            point = calibration.point(component, eps, gamma)
            result = point.result
            chosen = calibration.chosen == (eps, gamma)
            if math.isfinite(result.llc_mean):
                label = (
                    f"ε={eps:.2g}: {result.verdict}, acceptance {result.acceptance:.2f}, "
                    f"λ̂ = {result.llc_mean:.3g}"
                )
            else:
                label = (
                    f"ε={eps:.2g}: {result.verdict} ({result.num_diverged} of "
                    f"{result.num_chains} chains), no estimate"
                )
            style = "-" if point.eligible else ("--" if result.verdict != "diverged" else ":")
            ax.plot(
                curves[eps, gamma],
                color="crimson" if chosen else colour,
                linewidth=2.2 if chosen else 1.0,
                linestyle=style,
                label=("★ chosen: " if chosen else "") + label,
                zorder=3 if chosen else 2,
            )
            if chosen:
                ax.axhline(result.llc_mean, color="crimson", linewidth=0.8, linestyle=":")
        ax.set_ylim(low - 0.05 * span, high + 0.25 * span)
        ax.set_xlim(0, len(curves[calibration.step_sizes[0], gamma]) - 1)
        ax.set_xlabel("SGLD step")
        ax.set_ylabel("n_β [L_b(w_t) − L_b(w*)], chain mean")
        here = calibration.chosen is not None and calibration.chosen[1] == gamma
        ax.set_title(f"localisation γ = {gamma:g}" + ("  (chosen)" if here else ""), fontsize=10)
        ax.legend(
            # One column: two columns of these labels run into the neighbouring panel's legend.
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=1,
            frameon=False,
        )
        ax.grid(alpha=0.3)
    for index in range(len(gammas), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    context = calibration.context
    fig.suptitle(
        f"LLC calibration of '{component}' at step {calibration.step} of "
        f"{context.get('run', '')}: n_β = {calibration.n_beta:.4g}, {context.get('budget', '')}\n"
        "one line per step size ε; solid: eligible (verdict ok), dashed: not, dotted: diverged; "
        "the plateau after burn-in is the estimate",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def write_calibration(
    calibration: Calibration, run_dir: str | Path, arguments: Mapping[str, Any]
) -> dict[str, Path]:
    """Write the figure, the table (CSV and Markdown) and the snippet into ``RUN_DIR/llc/``.

    Every file is replaced whole or not at all (:mod:`lit_emergence.records.files`); without a
    chosen setting the snippet is not written and an older one is removed.

    Args:
        calibration: The assessed sweep.
        run_dir: The run directory.
        arguments: The monitor's settings as the sweep used them (for the snippet).

    Returns:
        Kind -> path of every file written.
    """
    import matplotlib.pyplot as plt

    folder = Path(run_dir) / CALIBRATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / name for kind, name in CALIBRATION_FILES.items()}
    records = [_record(point, calibration.chosen) for point in calibration.points]
    figure = calibration_figure(calibration)
    try:
        with replaced(paths["figure"], "wb") as handle:
            figure.savefig(handle, format="png", dpi=figure.dpi)
    finally:
        plt.close(figure)
    replace_text(paths["csv"], _csv_text(records))
    replace_text(paths["markdown"], _markdown(calibration, records))
    if calibration.chosen is not None:
        replace_text(paths["yaml"], yaml_snippet(calibration, arguments))
    else:
        paths["yaml"].unlink(missing_ok=True)
        del paths["yaml"]
    return paths


def calibrate_run(
    setup: LLCSetup,
    *,
    step: int | None = None,
    step_sizes: Sequence[float] | None = None,
    localizations: Sequence[float] | None = None,
    say: Callable[[str], None] | None = None,
) -> Calibration:
    """Sweep a run's checkpoint: load it, sample the grid in one call, assess and choose.

    Args:
        setup: The run and its monitor (:func:`~lit_emergence.llc.offline.prepare`; its
            ``per_head`` decides whether the heads are swept too).
        step: The scheduled checkpoint of this step; None takes the last checkpoint
            Lightning wrote (``last.ckpt``, else the newest).
        step_sizes: The step sizes (default :func:`default_step_sizes`).
        localizations: The localisations (default :data:`DEFAULT_LOCALIZATIONS`).
        say: Told, once the input is checked, what is about to be sampled.

    Returns:
        The assessed :class:`Calibration`, its ``context`` filled in.

    Raises:
        BadInputError: Before any sampling: no such checkpoint, one that cannot be loaded, a model
            the components cannot be built on, or two settings that print alike.
    """
    run = setup.run
    if step is None:
        path = run.checkpoint
        if path is None:
            raise BadInputError(f"{run.path} has no checkpoint in {CHECKPOINT_DIR}/")
    else:
        scheduled = scheduled_checkpoints(run)
        if step not in scheduled:
            there = ", ".join(map(str, scheduled)) or "none"
            raise BadInputError(
                f"no scheduled checkpoint of step {step} in {run.path} (steps: {there})"
            )
        path = scheduled[step]
    try:
        checkpoint, model = setup.load(path)
        components = setup.monitor.components(model)
    except Unavailable as reason:
        raise BadInputError(f"{path}: {reason}") from None
    except ValueError as error:
        raise BadInputError(str(error)) from None
    eps = sorted(set(step_sizes or default_step_sizes(setup.n_beta)))
    gammas = sorted(set(localizations or DEFAULT_LOCALIZATIONS))
    try:
        restrictions, eps_of, gamma_of, component_of = grid(components, eps, gammas)
    except ValueError as error:
        raise BadInputError(str(error)) from None
    if say is not None:
        settings = setup.monitor.settings
        say(
            f"step {checkpoint.step}: {len(components)} component(s) x {len(eps)} step sizes x "
            f"{len(gammas)} localisations x {settings['num_chains']} chains x "
            f"({settings['num_burnin']} + {settings['num_draws']}) steps, in one call"
        )
    with warnings.catch_warnings():
        # Diverging entries are expected in a sweep; the table and figure say which.
        warnings.filterwarnings("ignore", r"LLC .*(diverged|above the largest)", RuntimeWarning)
        results = setup.estimate(
            model,
            checkpoint.step,
            restrictions,
            step_size=eps_of,
            localization=gamma_of,
            localization_check=None,  # the sweep varies gamma itself
        )
    calibration = assess(
        results, eps_of, gamma_of, component_of, step=checkpoint.step, n_beta=setup.n_beta
    )
    settings = setup.monitor.settings
    calibration.context = {
        "run": run.name,
        "checkpoint": f"{CHECKPOINT_DIR}/{path.name}",
        "budget": f"{settings['num_chains']} chains x ({settings['num_burnin']} + "
        f"{settings['num_draws']}) steps, {len(setup.batches)} minibatches of "
        f"{setup.monitor.batch_size}",
    }
    return calibration
