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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from lit_emergence.llc.noise import RestrictedNoise
from lit_emergence.llc.sampler import LangevinKernel

__all__ = ["ChainGroup", "group_by_sampled_tensors"]


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
        network: Module tree to call with ``functional_call`` (see the estimator).
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
        chunk_size: ``vmap`` chunk size (None = all chains at once).
        compile: ``torch.compile`` the vectorised gradient (True or a mode name).

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
        chunk_size: int | None = None,
        compile: bool | str = False,
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

        def minibatch_loss(sampled: dict[str, Tensor], batch: Any) -> Tensor:
            outputs = functional_call(network, {**fixed, **sampled}, inputs_fn(batch))
            return loss_fn(outputs, batch)

        self.minibatch_loss = minibatch_loss
        gradient_fn = vmap(grad_and_value(minibatch_loss), in_dims=(0, None), chunk_size=chunk_size)
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

    def gradients(self, batch: Any) -> tuple[dict[str, Tensor], Tensor]:
        """Every chain's gradient and loss at its current position (the chains do not move)."""
        return self.gradient_fn(self.views, batch)

    def langevin_step(self, batch: Any) -> None:
        """One Langevin update of every chain, in place; the losses go to :attr:`step_losses`.

        Reads the noise from ``self.noise.buffer``: draw it (``self.noise.sample()``) first.
        """
        grads, losses = self.gradients(batch)
        self.step_losses.copy_(losses)
        grad = torch.cat([grads[n].reshape(self.num_chains, -1) for n in self.sampled_names], 1)
        self.kernel.step(self.w, grad.view_as(self.w), self.noise.buffer)
