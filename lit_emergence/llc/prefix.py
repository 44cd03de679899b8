"""Activations that no sampled coordinate can change, computed once per minibatch.

The minibatches of an estimate are fixed, and the chains of a group (:mod:`.chains`) move
only the tensors they sample. Every module that runs *before* the first module owning a
sampled tensor therefore sees the same inputs at every step: for the heads of block ``l``
of a transformer, the embedding, the blocks before ``l`` and block ``l``'s first LayerNorm.
:class:`PrefixCache` finds those modules by recording one forward pass, keeps their outputs
for every minibatch, and makes them return the kept output instead of computing it, so a
step computes only what the chains can change.

Found by running order alone, not by reading the model's code, so it checks itself: at a
random point of the sampled tensors the loss and its gradient with and without the cache
must agree (a module that reads a sampled tensor it does not own, or a caller that modifies
a kept output in place, would make them differ); otherwise the group runs without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

__all__ = ["PrefixCache"]

MinibatchLoss = Callable[[dict[str, Tensor], Any], Tensor]


class PrefixCache:
    """Kept outputs of the modules before the sampled ones, one set per minibatch.

    Build it with :meth:`build`; call :meth:`select` with a minibatch's index before
    evaluating the network on that minibatch.

    Attributes:
        modules: Names of the modules whose output is kept (the outermost ones).
    """

    def __init__(self, modules: list[str], outputs: list[dict[str, Any]]) -> None:
        self.modules = modules
        self.outputs = outputs
        self.current: dict[str, Any] = outputs[0] if outputs else {}

    def select(self, batch_index: int) -> None:
        """Serve the kept outputs of minibatch ``batch_index`` from now on."""
        self.current = self.outputs[batch_index]

    @classmethod
    def build(
        cls,
        network: nn.Module,
        parameters: dict[str, Tensor],
        sampled: Sequence[str],
        inputs_fn: Callable[[Any], tuple],
        batches: Sequence[Any],
        minibatch_loss: MinibatchLoss,
        reference_loss: MinibatchLoss,
    ) -> PrefixCache | None:
        """Find the cacheable modules, keep their outputs and patch ``network`` to serve them.

        Args:
            network: This group's own module tree (its modules' ``forward`` get replaced).
            parameters: Every parameter and buffer by name, at ``w*``.
            sampled: Names of the tensors the group samples.
            inputs_fn: ``batch -> tuple`` of model inputs.
            batches: The fixed minibatches.
            minibatch_loss: ``(sampled tensors, batch) -> loss`` through ``network``.
            reference_loss: The same through an unpatched copy (for the self-check).

        Returns:
            The cache, or None when nothing can be kept or the self-check fails (the network
            is then left unpatched).

        """
        modules = _cacheable_modules(network, parameters, sampled, inputs_fn(batches[0]))
        if not modules:
            return None
        outputs = [_record_outputs(network, parameters, modules, inputs_fn(b)) for b in batches]
        cache = cls(modules, outputs)
        named = dict(network.named_modules())
        for name in modules:
            named[name].forward = _Serve(cache, name)
        if not cache._agrees(parameters, sampled, batches[0], minibatch_loss, reference_loss):
            for name in modules:
                del named[name].forward  # back to the class's forward
            warnings.warn(
                "LLC: activations before the sampled tensors could not be reused (the model "
                "reads them in a way its module order does not show); sampling computes them "
                "at every step",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        return cache

    def _agrees(
        self,
        parameters: dict[str, Tensor],
        sampled: Sequence[str],
        batch: Any,
        minibatch_loss: MinibatchLoss,
        reference_loss: MinibatchLoss,
    ) -> bool:
        """Loss and gradient at a random point of the sampled tensors, with and without."""
        self.select(0)
        versions = [t._version for out in self.outputs for t in _tensors(out)]
        generator = torch.Generator(device=parameters[sampled[0]].device).manual_seed(0)
        point = {}
        for name in sampled:
            center = parameters[name]
            scale = 0.1 * float(center.detach().abs().mean()) + 1e-2
            noise = torch.randn(
                center.shape, generator=generator, device=center.device, dtype=center.dtype
            )
            point[name] = center.detach() + scale * noise
        with torch.enable_grad():
            grads, loss = grad_and_value(minibatch_loss)(point, batch)
            ref_grads, ref_loss = grad_and_value(reference_loss)(point, batch)
        tolerance = dict(rtol=1e-4, atol=1e-6)
        same = torch.allclose(loss, ref_loss, **tolerance, equal_nan=True)
        for name in sampled:
            scale = float(ref_grads[name].abs().max()) + 1e-12
            same &= torch.allclose(
                grads[name] / scale, ref_grads[name] / scale, **tolerance, equal_nan=True
            )
        unchanged = versions == [t._version for out in self.outputs for t in _tensors(out)]
        return bool(same) and unchanged


class _Serve:
    """A module's replacement ``forward``: the kept output of the selected minibatch."""

    def __init__(self, cache: PrefixCache, name: str) -> None:
        self.cache = cache
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cache.current[self.name]


def _tensors(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for value in output.values() for t in _tensors(value)]
    if isinstance(output, tuple | list):
        return [t for value in output for t in _tensors(value)]
    return []


def _keepable(output: Any) -> bool:
    """A tensor, or a tuple of tensors and Nones (a block's ``(x, pattern)``)."""
    if isinstance(output, Tensor):
        return True
    return isinstance(output, tuple) and all(v is None or isinstance(v, Tensor) for v in output)


def _cacheable_modules(
    network: nn.Module, parameters: dict[str, Tensor], sampled: Sequence[str], inputs: tuple
) -> list[str]:
    """The outermost modules that finish, called once, before a sampled tensor's owner starts.

    A sampled tensor belongs to the module its name names (``blocks.1.attn.q_proj.weight``
    -> ``blocks.1.attn.q_proj``); a tensor of the root module, or of a module that never
    runs, leaves nothing to keep.
    """
    owners = {name.rpartition(".")[0] for name in sampled}
    if "" in owners:
        return []
    named = {module: name for name, module in network.named_modules() if name}
    events: list[tuple[str, str]] = []
    outputs: dict[str, Any] = {}
    handles = []
    for module, name in named.items():
        handles.append(module.register_forward_pre_hook(_note(events, "start", name)))
        handles.append(module.register_forward_hook(_note(events, "end", name, outputs)))
    try:
        with torch.no_grad():
            functional_call(network, parameters, inputs)
    finally:
        for handle in handles:
            handle.remove()
    started = [name for kind, name in events if kind == "start"]
    if not owners <= set(started):
        return []
    first_touch = next(
        i for i, (kind, name) in enumerate(events) if kind == "start" and name in owners
    )
    finished_before = {name for kind, name in events[:first_touch] if kind == "end"}
    calls = {name: started.count(name) for name in finished_before}
    candidates = [
        name
        for name in finished_before
        if calls[name] == 1 and _keepable(outputs[name]) and _tensors(outputs[name])
    ]
    outermost = [
        name
        for name in candidates
        if not any(name.startswith(other + ".") for other in candidates if other != name)
    ]
    order = {name: i for i, name in enumerate(started)}
    return sorted(outermost, key=order.__getitem__)


def _note(
    events: list[tuple[str, str]], kind: str, name: str, outputs: dict[str, Any] | None = None
) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, output: Any = None) -> None:
        events.append((kind, name))
        if outputs is not None:
            outputs[name] = output

    return hook


def _record_outputs(
    network: nn.Module, parameters: dict[str, Tensor], modules: list[str], inputs: tuple
) -> dict[str, Any]:
    """The outputs of ``modules`` on one minibatch at ``w*``, detached."""
    named = dict(network.named_modules())
    kept: dict[str, Any] = {}
    handles = [named[name].register_forward_hook(_keep(kept, name)) for name in modules]
    try:
        with torch.no_grad():
            functional_call(network, parameters, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kept


def _keep(kept: dict[str, Any], name: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            kept[name] = output.detach()
        else:
            kept[name] = tuple(None if v is None else v.detach() for v in output)

    return hook
