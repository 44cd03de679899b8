"""Stacked SGLD chains of restrictions that sample the same parameter tensors.

:func:`~lit_emergence.llc.estimate_llc_many` sorts its restrictions into groups by the tensors
they sample (every head of one attention block samples that block's projections; the whole
model samples everything) and gives each group one :class:`ChainGroup`: its chains stacked as
``(R, K, P)`` over the coordinates of the group's tensors, one ``vmap(grad_and_value(loss))``
per step, one Langevin kernel and one noise source.

Grouping is what makes many restricted estimates cheap. Inside ``vmap``, a tensor that no
chain of the group samples is not batched, so whatever depends on nothing else is computed
once, not once per chain: for the heads of block ``l``, the blocks before ``l`` run once per
step, and the backward pass stops at block ``l`` (nothing earlier needs a gradient). Batching
every head of every block together would instead give every chain its own copy of every block.
Grouping changes no result: each restriction keeps its own noise stream
(:mod:`lit_emergence.llc.noise`), and its coordinates keep their order.

With fixed minibatches, what runs before the group's tensors is the same at every step: a
group keeps it per minibatch (:mod:`lit_emergence.llc.prefix`) instead of computing it once
per step. A group also measures the MALA acceptance of its steps on request
(:mod:`lit_emergence.llc.diagnostics`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from lit_emergence.llc.diagnostics import mala_log_acceptance
from lit_emergence.llc.noise import RestrictedNoise
from lit_emergence.llc.prefix import PrefixCache
from lit_emergence.llc.sampler import LangevinKernel

__all__ = ["ChainGroup", "group_by_sampled_tensors", "structural_copy"]


def structural_copy(model: nn.Module) -> nn.Module:
    """Copy the module tree in eval mode, sharing (never writing) the original tensors.

    Every parameter and buffer is replaced through ``functional_call``, so the copy needs no
    storage of its own; its hooks are removed so that observers registered on the original
    model do not see the sampler's batched tensors.
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


def group_by_sampled_tensors(
    masks_by_restriction: Mapping[str, Mapping[str, Tensor]], parameter_order: list[str]
) -> list[list[str]]:
    """Restriction names grouped by the exact set of tensors they sample, in first-seen order.

    Args:
        masks_by_restriction: Restriction name -> {parameter name -> bool mask}.
        parameter_order: Parameter names in the model's order.

    Returns:
        Lists of restriction names; together they hold every name once.

    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, masks in masks_by_restriction.items():
        key = tuple(n for n in parameter_order if n in masks)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


class ChainGroup:
    """The chains of several restrictions over the same tensors, advanced together.

    Args:
        network: Module tree to call with ``functional_call`` (see the estimator); shared
            between groups and never modified (a group that keeps activations patches its
            own copy).
        at_center: Every parameter at ``w*`` (on the sampling device); shared, never written.
        buffers: The model's buffers (on the sampling device).
        restriction_masks: Per restriction of the group, ``{parameter name -> bool mask}``; all
            name the same tensors.
        parameter_order: Parameter names in the model's order.
        loss_fn: ``(outputs, batch) -> scalar`` mean minibatch loss.
        inputs_fn: ``batch -> tuple`` of model inputs.
        num_chains: Chains per restriction (K).
        num_steps: Steps the trace has room for.
        kernel_settings: Keyword arguments of :class:`~lit_emergence.llc.sampler.LangevinKernel`
            other than ``center``, ``masks`` and ``num_chains`` (per-restriction step sizes and
            localisations as tensors of this group's restrictions).
        seed: Seed of every restriction's noise generator.
        batches: The fixed minibatches, on the sampling device.
        chunk_size: ``vmap`` chunk size (None = all chains at once).
        compile: ``torch.compile`` the vectorised gradient (True or a mode name).
        cache_prefix: Keep the activations before the sampled tensors per minibatch
            (:mod:`lit_emergence.llc.prefix`); ignored with ``compile``.

    """

    def __init__(
        self,
        network: nn.Module,
        at_center: dict[str, Tensor],
        buffers: dict[str, Tensor],
        restriction_masks: list[Mapping[str, Tensor]],
        parameter_order: list[str],
        loss_fn: Callable[[Any, Any], Tensor],
        inputs_fn: Callable[[Any], tuple],
        num_chains: int,
        num_steps: int,
        kernel_settings: dict[str, Any],
        seed: int,
        batches: Sequence[Any],
        chunk_size: int | None = None,
        compile: bool | str = False,
        cache_prefix: bool = True,
    ) -> None:
        self.sampled_names = [n for n in parameter_order if n in restriction_masks[0]]
        shapes = [at_center[n].shape for n in self.sampled_names]
        sizes = [at_center[n].numel() for n in self.sampled_names]
        center = torch.cat([at_center[n].reshape(-1) for n in self.sampled_names])
        self.masks = torch.stack(
            [
                torch.cat([m[n].reshape(-1).to(center.device) for n in self.sampled_names])
                for m in restriction_masks
            ]
        )  # (R, P)
        num_restrictions, num_coords = self.masks.shape
        self.num_chains = num_restrictions * num_chains
        self.w = center.expand(num_restrictions, num_chains, num_coords).clone()  # (R, K, P)
        flat = self.w.view(self.num_chains, num_coords)
        self.views: dict[str, Tensor] = {}
        offset = 0
        for n, shape, size in zip(self.sampled_names, shapes, sizes, strict=True):
            self.views[n] = flat[:, offset : offset + size].view(self.num_chains, *shape)
            offset += size
        # unsampled tensors stay at w*, unbatched: vmap computes what only they feed once
        fixed = {n: t for n, t in at_center.items() if n not in self.views}
        fixed.update(buffers)

        def loss_through(module: nn.Module) -> Callable[[dict[str, Tensor], Any], Tensor]:
            def minibatch_loss(sampled: dict[str, Tensor], batch: Any) -> Tensor:
                outputs = functional_call(module, {**fixed, **sampled}, inputs_fn(batch))
                return loss_fn(outputs, batch)

            return minibatch_loss

        self.prefix: PrefixCache | None = None
        if cache_prefix and not compile:
            own = structural_copy(network)
            self.prefix = PrefixCache.build(
                own,
                {**at_center, **buffers},
                self.sampled_names,
                inputs_fn,
                batches,
                loss_through(own),
                loss_through(network),
            )
            if self.prefix is not None:
                network = own
        self.minibatch_loss = loss_through(network)
        gradient_fn = vmap(
            grad_and_value(self.minibatch_loss), in_dims=(0, None), chunk_size=chunk_size
        )
        if compile:
            mode = compile if isinstance(compile, str) else None
            gradient_fn = torch.compile(gradient_fn, mode=mode)
        self.gradient_fn = gradient_fn
        self.kernel = LangevinKernel(
            center=center, masks=self.masks, num_chains=num_chains, **kernel_settings
        )
        self.noise = RestrictedNoise(self.masks, num_chains, seed, center.dtype)
        self.trace = torch.empty(self.num_chains, num_steps, dtype=center.dtype, device=flat.device)
        self.step_losses = self.trace.new_empty(self.num_chains)
        # MALA acceptance probability of each step; NaN where it is not measured
        self.acceptance = torch.full(
            (self.num_chains, num_steps), float("nan"), dtype=torch.float64, device=flat.device
        )
        self.step_acceptance = self.acceptance.new_empty(self.num_chains)
        # gradient and loss at the current position on a minibatch, if already evaluated
        self._evaluated: tuple[int, Tensor, Tensor] | None = None

    def select(self, batch_index: int) -> None:
        """Serve the kept activations of minibatch ``batch_index`` (no-op without a cache)."""
        if self.prefix is not None:
            self.prefix.select(batch_index)

    def gradients(self, batch: Any, batch_index: int) -> tuple[Tensor, Tensor]:
        """Every chain's flat gradient (C, P) and loss (C,) at its position (no move)."""
        self.select(batch_index)
        grads, losses = self.gradient_fn(self.views, batch)
        grad = torch.cat([grads[n].reshape(self.num_chains, -1) for n in self.sampled_names], 1)
        return grad, losses

    def langevin_step(self, batch: Any, batch_index: int, measure: bool = False) -> None:
        """One Langevin update of every chain, in place; the losses go to :attr:`step_losses`.

        Reads the noise from ``self.noise.buffer``: draw it (``self.noise.sample()``) first.

        Args:
            batch: The minibatch of this step.
            batch_index: Its index among the fixed minibatches.
            measure: Also compute the MALA acceptance of the step into
                :attr:`step_acceptance` (one more gradient evaluation, at the new position on
                the same minibatch; reused by the next step when it uses the same minibatch).

        """
        if self._evaluated is not None and self._evaluated[0] == batch_index:
            _, grad, losses = self._evaluated
        else:
            grad, losses = self.gradients(batch, batch_index)
        self._evaluated = None
        self.step_losses.copy_(losses)
        grad = grad.view_as(self.w)
        if measure:
            shape = self.w.shape[:2]
            before = self.kernel.potential(self.w, grad, losses.view(shape))
        self.kernel.step(self.w, grad, self.noise.buffer)
        if not measure:
            return
        new_grad, new_losses = self.gradients(batch, batch_index)
        self._evaluated = (batch_index, new_grad, new_losses)
        after = self.kernel.potential(self.w, new_grad.view_as(self.w), new_losses.view(shape))
        log_ratio = mala_log_acceptance(
            before[0], after[0], before[1], after[1], self.noise.buffer, self.kernel.noise_scale
        )
        probability = log_ratio.clamp(max=0.0).exp().nan_to_num(nan=0.0)
        self.step_acceptance.copy_(probability.reshape(-1))
