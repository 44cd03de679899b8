r"""Estimate the local learning coefficient (LLC) with SGLD chains vectorised by ``torch.func``.

The LLC of a model at its parameter ``w*`` is estimated as

    lambda_hat = n_beta * (E_w[L(w)] - L(w*)),

with ``w`` drawn by SGLD (or RMSProp-SGLD, :mod:`lit_emergence.llc.sampler`) from the
localised tempered posterior ``p(w) ~ exp(-n_beta L(w) - gamma/2 |w - w*|^2)``. The chains of
all restrictions that sample the same tensors advance in one
``torch.func.vmap(grad_and_value(loss))`` call per step over the parameters stacked along a
chain dimension (:mod:`lit_emergence.llc.chains`): no Python loop over chains.

Loss protocol: the model is called as ``model(*inputs_fn(batch))`` (through
``torch.func.functional_call`` with the chain's parameters) and the scalar loss is
``loss_fn(outputs, batch)``; it must be the *mean* loss over the minibatch. ``batches`` are
fixed minibatches, used in turn: step ``t`` uses ``batches[t % len(batches)]``.

The model itself is never modified: sampling runs on a copy of its module tree in eval mode
(dropout off), without its hooks, that shares but never writes the original tensors (every
parameter and buffer is supplied through ``functional_call``); noise comes from dedicated
``torch.Generator`` objects, never the global RNG.

Defaults (:mod:`lit_emergence.llc.settings`): ``n_beta = n / ln n`` from the training set
size, ``gamma = 1``, ``eps = 0.05 / (n_beta + gamma)``. Every result carries its diagnostics
and a verdict (:mod:`lit_emergence.llc.diagnostics`).
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lit_emergence.llc.chains import ChainGroup, group_by_sampled_tensors, structural_copy
from lit_emergence.llc.diagnostics import DEFAULT_THRESHOLDS, VerdictThresholds
from lit_emergence.llc.restriction import Restriction, resolve_restriction
from lit_emergence.llc.result import LLCResult, attach_localization_check, summarize_chains
from lit_emergence.llc.settings import (
    DEFAULT_LOCALIZATION,
    DEFAULT_STEP_SCALE,
    check_settings,
    default_n_beta,
    default_step_size,
    per_restriction,
    resolve_n_beta,
)

__all__ = ["default_inputs", "default_n_beta", "estimate_llc", "estimate_llc_many"]

LossFn = Callable[[Any, Any], Tensor]
InputsFn = Callable[[Any], tuple]

#: Suffix of the internal restriction that checks another at a weaker localisation.
_CHECK = "\x1fweak-localization"


def default_inputs(batch: Any) -> tuple:
    """Model inputs of a batch: a tensor itself, the first item of a tuple/list, ``"features"``.

    Args:
        batch: A tensor, a ``(inputs, targets, ...)`` tuple or list, or a dict with a
            ``"features"`` entry (the :class:`~lit_emergence.data.ParticleDataModule` batch).

    Returns:
        The positional arguments of the model call.

    """
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)):
        return (batch[0],)
    if isinstance(batch, Mapping) and "features" in batch:
        return (batch["features"],)
    raise ValueError(
        f"cannot find the model inputs in a batch of type {type(batch).__name__}; "
        "pass inputs_fn=lambda batch: (model_args...)"
    )


def estimate_llc(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    *,
    restrict: Restriction = None,
    **kwargs: Any,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current parameters, vectorised over chains.

    See :func:`estimate_llc_many` for every keyword argument; this is the call with a single
    restriction.

    Args:
        model: The model at the point of estimation ``w*`` (left untouched).
        loss_fn: ``loss_fn(outputs, batch) -> scalar`` mean minibatch loss.
        batches: Fixed minibatches, cycled over the steps.
        restrict: Coordinates to sample (:mod:`lit_emergence.llc.restriction`); None = all
            parameters that require grad.
        **kwargs: Keyword arguments of :func:`estimate_llc_many`.

    Returns:
        The :class:`LLCResult`.

    Example::

        result = estimate_llc(model, lambda out, b: F.mse_loss(out, b["target"]), batches,
                              step_size=3e-4, localization=100.0, generator=0)
        print(result.llc_mean, result.llc_std, result.still_climbing)

    """
    return estimate_llc_many(model, loss_fn, batches, {"llc": restrict}, **kwargs)["llc"]


@torch.inference_mode(False)  # callable from validation hooks that run in inference mode
def estimate_llc_many(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    restrictions: Mapping[str, Restriction],
    *,
    inputs_fn: InputsFn | None = None,
    sampler: str = "sgld",
    step_size: float | Mapping[str, float] | None = None,
    localization: float | Mapping[str, float] = DEFAULT_LOCALIZATION,
    n_beta: float | str | None = None,
    num_samples: int | None = None,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 50,
    thinning: int = 1,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
    rmsprop_alpha: float = 0.99,
    rmsprop_eps: float = 0.1,
    divergence_factor: float = 1e3,
    climb_threshold: float = 1.0,
    localization_check: float | None = 4.0,
    acceptance_every: int | None = 4,
    thresholds: VerdictThresholds | None = None,
    chunk_size: int | None = None,
    math_attention: bool = True,
    cache_prefix: bool = True,
    compile: bool | str = False,
    cuda_graph: bool = False,
) -> dict[str, LLCResult]:
    """Estimate the LLC of several restrictions at once, their chains vectorised.

    Chain ``k`` of restriction ``r`` samples only the coordinates ``r`` selects (zero drift
    and zero noise elsewhere); all ``len(restrictions) * num_chains`` chains start at ``w*``
    and advance together. Restrictions that sample the same tensors (e.g. the heads of one
    attention block) share one ``vmap(grad_and_value(loss))`` per step; tensors a group does
    not sample stay unbatched, and what runs before its tensors is kept per minibatch rather
    than recomputed (:mod:`lit_emergence.llc.chains`, :mod:`lit_emergence.llc.prefix`).

    Noise: restriction ``r`` draws its noise from its own generator seeded with the run's
    seed, on its sampled coordinates only (:mod:`lit_emergence.llc.noise`), so each result
    equals :func:`estimate_llc` of that restriction alone with the same seed.

    Diagnostics (:mod:`lit_emergence.llc.diagnostics`): every result carries the MALA
    acceptance of its steps, the estimate of the same chains' budget at
    ``localization / localization_check`` (same noise), trace flatness, divergence and a
    ``verdict``. One ``UserWarning`` names the estimates that are localisation-dominated.

    Divergence never raises: a chain whose loss becomes non-finite or explodes is flagged in
    :attr:`LLCResult.diverged`, a ``RuntimeWarning`` is issued, and the estimate uses the
    remaining chains (NaN if none remain).

    Args:
        model: The model at the point of estimation ``w*`` (left untouched: parameters,
            gradients, buffers, train/eval flag and the global RNG are not modified).
        loss_fn: ``loss_fn(outputs, batch) -> scalar`` mean loss of the minibatch, where
            ``outputs = model(*inputs_fn(batch))``.
        batches: Fixed minibatches (materialised with ``list``), step ``t`` uses
            ``batches[t % len(batches)]``. Moved to ``device`` once.
        restrictions: Name -> restriction (``None``/``"all"``, parameter names, or masks; see
            :mod:`lit_emergence.llc.restriction`).
        inputs_fn: ``inputs_fn(batch) -> tuple`` of model arguments; default
            :func:`default_inputs`.
        sampler: ``"sgld"`` or ``"rmsprop_sgld"`` (:mod:`lit_emergence.llc.sampler`).
        step_size: SGLD step size eps; a float, a dict with a value per restriction name, or
            None for ``0.05 / (n_beta + gamma)``
            (:func:`~lit_emergence.llc.settings.default_step_size`).
        localization: Localisation strength gamma; a float or a dict per restriction name.
        n_beta: Inverse temperature times sample size: a number, ``"n/ln(n)"`` (None, the
            default) or ``"B/ln(B)"`` with B the leading size of the first model input
            (:func:`~lit_emergence.llc.settings.resolve_n_beta`).
        num_samples: ``n`` of ``n/ln(n)``: the number of training samples the loss is averaged
            over (the training set size); None counts the samples in ``batches``.
        num_chains: Chains per restriction (K).
        num_draws: Kept draws per chain.
        num_burnin: Steps discarded before the first draw.
        thinning: Steps between kept draws; a chain makes
            ``num_burnin + num_draws * thinning`` steps.
        generator: Seed (int), a ``torch.Generator`` from which one seed is drawn, or None
            for a fresh random seed; the seed used is in ``hyperparameters["seed"]``.
        device: Where to sample; default the device of the model's parameters.
        rmsprop_alpha: RMSProp decay (``rmsprop_sgld`` only).
        rmsprop_eps: RMSProp stabiliser added to ``sqrt(V)`` (``rmsprop_sgld`` only).
        divergence_factor: A chain diverged if its loss rose above
            ``L(w*) + divergence_factor * (|L(w*)| + 1 / n_beta)`` or became non-finite.
        climb_threshold: Flag ``still_climbing`` when the chain-averaged loss rises by more
            than this many chain spreads over the second half of the draws.
        localization_check: Also run the same chains (same number, same noise) at
            ``localization / localization_check`` and report the shift; doubles the work.
            None skips it (a calibration sweep that varies gamma itself does not need it).
        acceptance_every: Measure the MALA acceptance at every this-many-th kept draw (one
            more gradient evaluation each, free with a single minibatch); None skips it.
        thresholds: Where the verdicts turn (default :class:`VerdictThresholds`).
        chunk_size: ``vmap`` chunk size (chains computed at once); None = all, lower it to
            bound memory.
        math_attention: Run ``F.scaled_dot_product_attention`` on its math kernel while
            sampling (``torch.nn.attention.sdpa_kernel``): the fused CPU kernels have no vmap
            batching rule and would loop over chains. False keeps PyTorch's kernel choice.
        cache_prefix: Keep the activations that run before a group's sampled tensors per
            minibatch instead of recomputing them every step (self-checked; not with
            ``compile``). Changes no result.
        compile: Wrap the vectorised gradient in ``torch.compile``: True for its default
            mode, or a mode name, e.g. ``"reduce-overhead"`` (CUDA graphs on a GPU). The
            first call compiles (tens of seconds); results agree with eager to round-off.
        cuda_graph: Capture one whole SGLD step (gradient of every chain, Langevin update)
            per minibatch in a CUDA graph and replay it (CUDA only): removes the per-operation
            launch cost that bounds small models on a GPU. The noise is still drawn from the
            restrictions' generators before each replay, so results equal the eager path's to
            round-off. Costs one capture per minibatch (two with the acceptance measured).

    Returns:
        Dict restriction name -> :class:`LLCResult`, in the order of ``restrictions``.

    Raises:
        ValueError: For an invalid setting (one line naming it), before any sampling.

    """
    check_settings(
        sampler=sampler,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        thinning=thinning,
        divergence_factor=divergence_factor,
        rmsprop_alpha=rmsprop_alpha,
        rmsprop_eps=rmsprop_eps,
        localization_check=localization_check,
        acceptance_every=1 if acceptance_every is None else acceptance_every,
    )
    if not restrictions:
        raise ValueError("restrictions is empty; pass e.g. {'model': None}")
    names = list(restrictions)
    if step_size is not None:
        per_restriction("step_size", step_size, names, allow_zero=False)
    localizations = per_restriction("localization", localization, names, allow_zero=True)
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty; pass at least one minibatch")
    inputs_fn = inputs_fn or default_inputs

    parameters = dict(model.named_parameters())
    if not parameters:
        raise ValueError("the model has no parameters; nothing to sample")
    masks_by_restriction = {
        name: resolve_restriction(parameters, restriction)
        for name, restriction in restrictions.items()
    }
    device = torch.device(device) if device is not None else next(iter(parameters.values())).device
    sampled_names = [n for n in parameters if any(n in m for m in masks_by_restriction.values())]
    dtypes = {parameters[n].dtype for n in sampled_names}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(
            f"sampled parameters have dtypes {sorted(map(str, dtypes))}; "
            "convert the model to one floating dtype (e.g. model.float())"
        )
    dtype = dtypes.pop()
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}; leave it False here")

    batches = [_to_device(batch, device) for batch in batches]
    n_beta, n_beta_rule, n_used = resolve_n_beta(
        n_beta,
        num_samples,
        batch_size=_leading_size(inputs_fn(batches[0])),
        samples_in_batches=sum(_leading_size(inputs_fn(b)) for b in batches),
    )
    if step_size is None:
        step_sizes = [default_step_size(n_beta, gamma) for gamma in localizations]
        step_size_rule = f"{DEFAULT_STEP_SCALE:g}/(n_beta+gamma)"
    else:
        step_sizes = per_restriction("step_size", step_size, names, allow_zero=False)
        step_size_rule = "given"
    seed = _resolve_seed(generator)

    # -- every restriction, then its localisation check right after it (same mask, same seed:
    #    the same noise, so the two estimates differ by the localisation, not by chance) ----
    settings = {
        name: (masks_by_restriction[name], step_sizes[r], localizations[r])
        for r, name in enumerate(names)
    }
    if localization_check is not None:
        settings = {
            key: value
            for name, (masks, eps, gamma) in settings.items()
            for key, value in (
                [(name, (masks, eps, gamma))]
                + ([(name + _CHECK, (masks, eps, gamma / localization_check))] if gamma else [])
            )
        }
    keys = list(settings)

    # -- chains: one stacked group per set of sampled tensors (lit_emergence.llc.chains) -----
    network = structural_copy(model)
    at_center = {n: p.detach().to(device).clone() for n, p in parameters.items()}
    buffers = {n: b.detach().to(device).clone() for n, b in model.named_buffers()}
    num_steps = num_burnin + num_draws * thinning
    groups: list[tuple[list[str], ChainGroup]] = []

    def attention() -> contextlib.AbstractContextManager:
        return sdpa_kernel([SDPBackend.MATH]) if math_attention else contextlib.nullcontext()

    with attention():
        for group_keys in group_by_sampled_tensors(
            {key: settings[key][0] for key in keys}, list(parameters)
        ):
            kernel_settings = {
                "sampler": sampler,
                "step_size": torch.tensor(
                    [settings[k][1] for k in group_keys], dtype=torch.float64
                ),
                "localization": torch.tensor(
                    [settings[k][2] for k in group_keys], dtype=torch.float64
                ),
                "n_beta": n_beta,
                "rmsprop_alpha": rmsprop_alpha,
                "rmsprop_eps": rmsprop_eps,
            }
            chains = ChainGroup(
                network, at_center, buffers, [settings[k][0] for k in group_keys],
                list(parameters), loss_fn, inputs_fn, num_chains, num_steps, kernel_settings,
                seed, batches, chunk_size=chunk_size, compile=compile, cache_prefix=cache_prefix,
            )  # fmt: skip
            groups.append((group_keys, chains))
        first = groups[0][1]
        init_losses = _losses_at_center(first, batches)

    steps = torch.arange(num_steps)
    is_draw = (steps >= num_burnin) & ((steps - num_burnin) % thinning == 0)
    draw_index = torch.cumsum(is_draw, 0) - 1
    if acceptance_every is None:
        measured = torch.zeros(num_steps, dtype=torch.bool)
    else:
        measured = is_draw & (draw_index % acceptance_every == 0)
    measured_list = measured.tolist()

    def step_all(batch_index: int, measure: bool) -> None:
        for _, chains in groups:
            chains.langevin_step(batches[batch_index], batch_index, measure)

    def warm_up(batch_index: int) -> None:
        for _, chains in groups:
            chains.gradients(batches[batch_index], batch_index)

    # -- sampling: losses stay on the device until the end --------------------------------
    with torch.no_grad(), attention():
        replays = (
            _capture_steps(step_all, warm_up, len(batches), any(measured_list))
            if cuda_graph
            else None
        )
        for t in range(num_steps):
            for _, chains in groups:
                chains.noise.sample()  # into noise.buffer, which the step (or graph) reads
            batch_index = t % len(batches)
            if replays is not None:
                replays[batch_index, measured_list[t]].replay()
            else:
                step_all(batch_index, measured_list[t])
            for _, chains in groups:
                chains.trace[:, t] = chains.step_losses
                if measured_list[t]:
                    chains.acceptance[:, t] = chains.step_acceptance

    # one host transfer for all traces and reference losses
    traces = [chains.trace.reshape(-1) for _, chains in groups]
    packed = torch.cat([*traces, init_losses.to(dtype)]).to("cpu", torch.float64)
    acceptances = torch.cat([chains.acceptance.reshape(-1) for _, chains in groups]).cpu()
    trace_cpu, acceptance_cpu, num_sampled, offset = {}, {}, {}, 0
    for group_keys, chains in groups:
        size = chains.trace.numel()
        block = packed[offset : offset + size].view(len(group_keys), num_chains, num_steps)
        accepted = acceptances[offset : offset + size].view(len(group_keys), num_chains, num_steps)
        offset += size
        for r, key in enumerate(group_keys):
            trace_cpu[key] = block[r]
            acceptance_cpu[key] = accepted[r]
            num_sampled[key] = int(chains.masks[r].sum())
    init_cpu = packed[offset:]

    batch_of_step = steps % len(batches)
    common = {
        "sampler": sampler,
        "n_beta": n_beta,
        "n_beta_rule": n_beta_rule,
        "num_samples": n_used,
        "step_size_rule": step_size_rule,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
        "thinning": thinning,
        "num_batches": len(batches),
        "localization_check": localization_check,
        "acceptance_every": acceptance_every,
        "seed": seed,
        "dtype": str(dtype),
        "device": str(device),
    }
    if sampler == "rmsprop_sgld":
        common.update(rmsprop_alpha=rmsprop_alpha, rmsprop_eps=rmsprop_eps)

    summaries = {
        key: summarize_chains(
            trace_cpu[key],
            is_draw,
            init_cpu,
            batch_of_step,
            acceptance_cpu[key],
            n_beta=n_beta,
            divergence_factor=divergence_factor,
            climb_threshold=climb_threshold,
            num_sampled=num_sampled[key],
            hyperparameters={
                **common,
                "step_size": settings[key][1],
                "localization": settings[key][2],
            },
            thresholds=thresholds or DEFAULT_THRESHOLDS,
        )
        for key in keys
    }
    results = {}
    for name in names:
        result = summaries[name]
        if name + _CHECK in summaries:
            result = attach_localization_check(
                result, summaries[name + _CHECK], thresholds or DEFAULT_THRESHOLDS
            )
        if result.num_diverged:
            finite = num_chains - result.num_diverged
            uses = f"the estimate uses the {finite} others" if finite else "the estimate is NaN"
            warnings.warn(
                f"LLC {name!r}: {result.num_diverged} of {num_chains} chains diverged "
                f"(non-finite or exploding loss); {uses}. Lower step_size "
                f"(now {result.hyperparameters['step_size']:g}) or raise localization",
                RuntimeWarning,
                stacklevel=3,  # the caller, past the inference_mode decorator
            )
        results[name] = result
    escaped = {n: r for n, r in results.items() if r.exceeds_regular_bound}
    if escaped:
        listed = ", ".join(
            f"{n!r} ({r.llc_mean:.4g} > d/2 = {r.num_sampled / 2:g})" for n, r in escaped.items()
        )
        warnings.warn(
            f"LLC above the largest LLC of a minimum, the chains left the basin of w*: {listed}; "
            "lower step_size",
            RuntimeWarning,
            stacklevel=3,
        )
    dominated = {n: r for n, r in results.items() if r.verdict == "localisation-dominated"}
    if dominated:
        listed = ", ".join(f"{n!r} ({r.localization_shift:.0%})" for n, r in dominated.items())
        warnings.warn(
            f"LLC localisation-dominated: at localization/{localization_check:g} the estimate "
            f"rises by the percentage given: {listed}; lower localization or raise n_beta",
            UserWarning,
            stacklevel=3,
        )
    return results


def _capture_steps(
    step: Callable[[int, bool], None],
    warm_up: Callable[[int], None],
    num_batches: int,
    with_acceptance: bool,
) -> dict[tuple[int, bool], torch.cuda.CUDAGraph]:
    """One CUDA graph of ``step`` per minibatch (and per acceptance on/off), one memory pool.

    Capturing records kernels without running them, so the chains do not move; the warm-up
    (lazy initialisation outside the capture, as CUDA graphs require) evaluates gradients
    only, for the same reason. The graphs are replayed one at a time in capture order, the
    condition for sharing their pool.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for batch_index in range(min(2, num_batches)):
            warm_up(batch_index)
    torch.cuda.current_stream().wait_stream(side)
    graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
    pool = None
    for measure in (False, True) if with_acceptance else (False,):
        for batch_index in range(num_batches):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                step(batch_index, measure)
            pool = graph.pool() if pool is None else pool
            graphs[batch_index, measure] = graph
    return graphs


def _resolve_seed(generator: torch.Generator | int | None) -> int:
    """Return an integer seed; never reads or advances the global RNG."""
    if generator is None:
        return secrets.randbits(63)
    if isinstance(generator, torch.Generator):
        draw = torch.randint(
            0, 2**62, (1,), generator=generator, device=generator.device, dtype=torch.int64
        )
        return int(draw)
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise ValueError(f"generator={generator!r} must be an int seed, a torch.Generator or None")
    return generator


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        batch = batch.to(device)
        # tensors made under inference mode cannot be saved for backward: copy them
        return batch.clone() if batch.is_inference() else batch
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _leading_size(inputs: tuple) -> int:
    for item in inputs:
        if isinstance(item, Tensor) and item.ndim > 0:
            return item.shape[0]
    raise ValueError("cannot infer the batch size from the model inputs; pass n_beta")


def _losses_at_center(chains: ChainGroup, batches: list[Any]) -> Tensor:
    """``L_b(w*)`` for every batch (num_batches,), checking that the loss is a scalar."""
    center = {n: v[0] for n, v in chains.views.items()}  # every chain starts at w*
    losses = []
    with torch.no_grad():
        for batch_index, batch in enumerate(batches):
            chains.select(batch_index)
            loss = chains.minibatch_loss(center, batch)
            if not isinstance(loss, Tensor) or loss.ndim != 0:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(
                    f"loss_fn returned {shape}; it must return the scalar mean loss of the batch"
                )
            losses.append(loss)
    return torch.stack(losses)
