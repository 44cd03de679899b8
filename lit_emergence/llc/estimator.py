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
"""

from __future__ import annotations

import contextlib
import copy
import math
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lit_emergence.llc.chains import ChainGroup, group_by_sampled_tensors
from lit_emergence.llc.restriction import Restriction, resolve_restriction
from lit_emergence.llc.result import LLCResult, summarize_chains
from lit_emergence.llc.sampler import SAMPLERS

__all__ = ["default_inputs", "default_n_beta", "estimate_llc", "estimate_llc_many"]

LossFn = Callable[[Any, Any], Tensor]
InputsFn = Callable[[Any], tuple]


def default_n_beta(batch_size: int) -> float:
    """``B / ln B``, the usual inverse temperature times sample size for minibatches of B.

    Args:
        batch_size: Minibatch size B (at least 2).

    Returns:
        ``B / ln(B)``, e.g. 46.17 for B = 256.

    """
    if batch_size < 2:
        raise ValueError(f"batch size {batch_size} < 2 gives no B/ln B; pass n_beta explicitly")
    return batch_size / math.log(batch_size)


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
    step_size: float | Mapping[str, float] = 1e-4,
    localization: float | Mapping[str, float] = 100.0,
    n_beta: float | None = None,
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
    chunk_size: int | None = None,
    math_attention: bool = True,
    compile: bool | str = False,
    cuda_graph: bool = False,
) -> dict[str, LLCResult]:
    """Estimate the LLC of several restrictions at once, their chains vectorised.

    Chain ``k`` of restriction ``r`` samples only the coordinates ``r`` selects (zero drift
    and zero noise elsewhere); all ``len(restrictions) * num_chains`` chains start at ``w*``
    and advance together. Restrictions that sample the same tensors (e.g. the heads of one
    attention block) share one ``vmap(grad_and_value(loss))`` per step; tensors a group does
    not sample stay unbatched, so what depends only on them (earlier blocks) is computed once
    per step, not per chain (:mod:`lit_emergence.llc.chains`).

    Noise: restriction ``r`` draws its noise from its own generator seeded with the run's
    seed, on its sampled coordinates only (:mod:`lit_emergence.llc.noise`), so each result
    equals :func:`estimate_llc` of that restriction alone with the same seed.

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
        step_size: SGLD step size eps; a float, or a dict with a value per restriction name.
        localization: Localisation strength gamma; a float or a dict per restriction name.
        n_beta: Inverse temperature times sample size; None = ``B / ln B`` with B the leading
            dimension of the first model input of the first batch (:func:`default_n_beta`).
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
        chunk_size: ``vmap`` chunk size (chains computed at once); None = all, lower it to
            bound memory.
        math_attention: Run ``F.scaled_dot_product_attention`` on its math kernel while
            sampling (``torch.nn.attention.sdpa_kernel``): the fused CPU kernels have no vmap
            batching rule and would loop over chains. False keeps PyTorch's kernel choice.
        compile: Wrap the vectorised gradient in ``torch.compile``: True for its default
            mode, or a mode name, e.g. ``"reduce-overhead"`` (CUDA graphs on a GPU). The
            first call compiles (tens of seconds); results agree with eager to round-off.
        cuda_graph: Capture one whole SGLD step (gradient of every chain, Langevin update)
            per minibatch in a CUDA graph and replay it (CUDA only): removes the per-operation
            launch cost that bounds small models on a GPU. The noise is still drawn from the
            restrictions' generators before each replay, so results equal the eager path's to
            round-off. Costs one capture per minibatch (their memory is shared).

    Returns:
        Dict restriction name -> :class:`LLCResult`, in the order of ``restrictions``.

    Raises:
        ValueError: For an invalid setting (one line naming it), before any sampling.

    """
    _check_settings(
        sampler=sampler,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        thinning=thinning,
        divergence_factor=divergence_factor,
        rmsprop_alpha=rmsprop_alpha,
        rmsprop_eps=rmsprop_eps,
    )
    if not restrictions:
        raise ValueError("restrictions is empty; pass e.g. {'model': None}")
    names = list(restrictions)
    step_sizes = _per_restriction("step_size", step_size, names, allow_zero=False)
    localizations = _per_restriction("localization", localization, names, allow_zero=True)
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
    if n_beta is None:
        n_beta = default_n_beta(_leading_size(inputs_fn(batches[0])))
        n_beta_rule = "B/ln(B)"
    else:
        n_beta_rule = "given"
    if not n_beta > 0:
        raise ValueError(f"n_beta={n_beta} must be > 0; e.g. leave it None for B/ln(B)")
    seed = _resolve_seed(generator)

    # -- chains: one stacked group per set of sampled tensors (lit_emergence.llc.chains) -----
    network = _structural_copy(model)
    at_center = {n: p.detach().to(device).clone() for n, p in parameters.items()}
    buffers = {n: b.detach().to(device).clone() for n, b in model.named_buffers()}
    num_steps = num_burnin + num_draws * thinning
    index = {name: r for r, name in enumerate(names)}
    groups: list[tuple[list[str], ChainGroup]] = []
    for group_names in group_by_sampled_tensors(masks_by_restriction, list(parameters)):
        rows = [index[name] for name in group_names]
        kernel_settings = {
            "sampler": sampler,
            "step_size": torch.tensor([step_sizes[r] for r in rows], dtype=torch.float64),
            "localization": torch.tensor([localizations[r] for r in rows], dtype=torch.float64),
            "n_beta": n_beta,
            "rmsprop_alpha": rmsprop_alpha,
            "rmsprop_eps": rmsprop_eps,
        }
        chains = ChainGroup(
            network, at_center, buffers, [masks_by_restriction[n] for n in group_names],
            list(parameters), loss_fn, inputs_fn, num_chains, num_steps, kernel_settings, seed,
            chunk_size=chunk_size, compile=compile,
        )  # fmt: skip
        groups.append((group_names, chains))

    def attention() -> contextlib.AbstractContextManager:
        return sdpa_kernel([SDPBackend.MATH]) if math_attention else contextlib.nullcontext()

    first = groups[0][1]
    with attention():
        init_losses = _losses_at_center(first.minibatch_loss, first.views, batches)

    def step_all(batch: Any) -> None:
        for _, chains in groups:
            chains.langevin_step(batch)

    def warm_up(batch: Any) -> None:
        for _, chains in groups:
            chains.gradients(batch)

    # -- sampling: losses stay on the device until the end --------------------------------
    with torch.no_grad(), attention():
        replays = _capture_steps(step_all, warm_up, batches) if cuda_graph else None
        for t in range(num_steps):
            for _, chains in groups:
                chains.noise.sample()  # into noise.buffer, which the step (or graph) reads
            batch_index = t % len(batches)
            if replays is not None:
                replays[batch_index].replay()
            else:
                step_all(batches[batch_index])
            for _, chains in groups:
                chains.trace[:, t] = chains.step_losses

    # one host transfer for all traces and reference losses
    traces = [chains.trace.reshape(-1) for _, chains in groups]
    packed = torch.cat([*traces, init_losses.to(dtype)]).to("cpu", torch.float64)
    trace_cpu, num_sampled, offset = {}, {}, 0
    for group_names, chains in groups:
        block = packed[offset : offset + chains.trace.numel()]
        block = block.view(len(group_names), num_chains, num_steps)
        offset += chains.trace.numel()
        for r, name in enumerate(group_names):
            trace_cpu[name] = block[r]
            num_sampled[name] = int(chains.masks[r].sum())
    init_cpu = packed[offset:]

    steps = torch.arange(num_steps)
    is_draw = (steps >= num_burnin) & ((steps - num_burnin) % thinning == 0)
    batch_of_step = steps % len(batches)
    common = {
        "sampler": sampler,
        "n_beta": n_beta,
        "n_beta_rule": n_beta_rule,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
        "thinning": thinning,
        "num_batches": len(batches),
        "seed": seed,
        "dtype": str(dtype),
        "device": str(device),
    }
    if sampler == "rmsprop_sgld":
        common.update(rmsprop_alpha=rmsprop_alpha, rmsprop_eps=rmsprop_eps)

    results = {}
    for r, name in enumerate(names):
        result = summarize_chains(
            trace_cpu[name],
            is_draw,
            init_cpu,
            batch_of_step,
            n_beta=n_beta,
            divergence_factor=divergence_factor,
            climb_threshold=climb_threshold,
            num_sampled=num_sampled[name],
            hyperparameters={
                **common,
                "step_size": step_sizes[r],
                "localization": localizations[r],
            },
        )
        if result.num_diverged:
            finite = num_chains - result.num_diverged
            uses = f"the estimate uses the {finite} others" if finite else "the estimate is NaN"
            warnings.warn(
                f"LLC {name!r}: {result.num_diverged} of {num_chains} chains diverged "
                f"(non-finite or exploding loss); {uses}. Lower step_size "
                f"(now {step_sizes[r]:g}) or raise localization",
                RuntimeWarning,
                stacklevel=3,  # the caller, past the inference_mode decorator
            )
        results[name] = result
    return results


def _capture_steps(
    step: Callable[[Any], None], warm_up: Callable[[Any], None], batches: list[Any]
) -> list[torch.cuda.CUDAGraph]:
    """One CUDA graph of ``step`` per minibatch, sharing one memory pool.

    Capturing records kernels without running them, so the chains do not move; the warm-up
    (lazy initialisation outside the capture, as CUDA graphs require) evaluates gradients
    only, for the same reason. The graphs are replayed one at a time in capture order, the
    condition for sharing their pool.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for batch in batches[:2]:
            warm_up(batch)
    torch.cuda.current_stream().wait_stream(side)
    graphs: list[torch.cuda.CUDAGraph] = []
    for batch in batches:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=graphs[0].pool() if graphs else None):
            step(batch)
        graphs.append(graph)
    return graphs


def _check_settings(**settings: Any) -> None:
    if settings["sampler"] not in SAMPLERS:
        raise ValueError(f"sampler={settings['sampler']!r} is unknown; use one of {SAMPLERS}")
    for name in ("num_chains", "num_draws", "thinning"):
        if int(settings[name]) != settings[name] or settings[name] < 1:
            raise ValueError(f"{name}={settings[name]} must be a positive integer")
    if int(settings["num_burnin"]) != settings["num_burnin"] or settings["num_burnin"] < 0:
        raise ValueError(f"num_burnin={settings['num_burnin']} must be an integer >= 0")
    if not settings["divergence_factor"] > 0:
        raise ValueError(f"divergence_factor={settings['divergence_factor']} must be > 0")
    if not 0.0 <= settings["rmsprop_alpha"] < 1.0:
        raise ValueError(f"rmsprop_alpha={settings['rmsprop_alpha']} must be in [0, 1)")
    if not settings["rmsprop_eps"] > 0:
        raise ValueError(f"rmsprop_eps={settings['rmsprop_eps']} must be > 0, e.g. 0.1")


def check_sampling_settings(
    *,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    step_size: float | Mapping[str, float],
    localization: float | Mapping[str, float],
    sampler: str,
    n_beta: float | None = None,
) -> None:
    """Check sampling settings before any work, with the messages :func:`estimate_llc_many` gives.

    Raises:
        ValueError: One line naming the setting, its value and the rule.
    """
    _check_settings(
        sampler=sampler,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        thinning=1,
        divergence_factor=1.0,
        rmsprop_alpha=0.0,
        rmsprop_eps=1.0,
    )
    for setting, value, allow_zero in (
        ("step_size", step_size, False),
        ("localization", localization, True),
    ):
        _per_restriction(
            setting, value, list(value) if isinstance(value, Mapping) else [setting], allow_zero
        )
    if n_beta is not None and not (math.isfinite(n_beta) and n_beta > 0):
        raise ValueError(f"n_beta={n_beta} must be finite and > 0, or null for the default")


def _per_restriction(
    setting: str, value: float | Mapping[str, float], names: list[str], allow_zero: bool
) -> list[float]:
    """One float per restriction from a float or a dict name -> float."""
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{setting} has no value for restriction(s) {missing}; add them")
        values = [float(value[n]) for n in names]
    else:
        values = [float(value)] * len(names)
    for v in values:
        if not (v >= 0 if allow_zero else v > 0) or not math.isfinite(v):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{setting}={v} must be finite and {bound}")
    return values


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


def _structural_copy(model: nn.Module) -> nn.Module:
    """Copy the module tree in eval mode, sharing (never writing) the original tensors.

    Every parameter and buffer is replaced through ``functional_call``, so the copy needs no
    storage of its own; its forward hooks are removed so that observers registered on the
    original model do not see the sampler's batched tensors.
    """
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    network = copy.deepcopy(model, memo)
    network.eval()
    for module in network.modules():
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        ):
            hooks.clear()
    return network


def _losses_at_center(
    minibatch_loss: Callable[[dict[str, Tensor], Any], Tensor],
    views: dict[str, Tensor],
    batches: list[Any],
) -> Tensor:
    """``L_b(w*)`` for every batch (num_batches,), checking that the loss is a scalar."""
    center = {n: v[0] for n, v in views.items()}  # every chain starts at w*
    losses = []
    with torch.no_grad():
        for batch in batches:
            loss = minibatch_loss(center, batch)
            if not isinstance(loss, Tensor) or loss.ndim != 0:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(
                    f"loss_fn returned {shape}; it must return the scalar mean loss of the batch"
                )
            losses.append(loss)
    return torch.stack(losses)
