"""A training step's forward, loss and backward captured once in a CUDA graph and replayed.

:class:`GraphedTrainingStep` follows PyTorch's CUDA-graph recipe: a few eager passes on a side
stream (they compile, pick kernels and warm the allocator outside the graph), then one capture
of ``loss_fn`` and its backward on static copies of a batch. Every later call copies its batch
into those static inputs and replays the graph, which writes (not adds) the gradients into the
``.grad`` tensors allocated at capture and leaves the loss in a static tensor. A batch of
another shape, dtype or device is captured again.

The caller owns everything else: it must not reset the gradients to ``None`` between replays,
must not back-propagate the returned loss (it has no autograd history), and runs the optimizer
eagerly. :class:`~lit_emergence.module.LearnedSimulator` (``cuda_graph=True``) does all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]

CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")
"""``torch.compile`` modes that use inductor's own CUDA graphs, which cannot run inside ours."""

WARMUP_ITERATIONS = 3
"""Eager forward/backward passes on a side stream before the capture."""


@dataclass
class _CapturedStep:
    """One captured forward + loss + backward and the static tensors it reads and writes."""

    key: tuple[Any, ...]
    graph: torch.cuda.CUDAGraph
    features: Tensor
    target: Tensor
    loss: Tensor


class GraphedTrainingStep:
    """Forward, loss and backward of ``loss_fn`` as one replayed CUDA graph.

    The graph is captured on the first call (and again when the batch's shape, dtype or device
    changes, after releasing the old graph and its memory pool). Drop the object to release the
    graph; the gradients keep their last values.

    Args:
        loss_fn: ``(features, target) -> scalar loss``; its backward writes the gradients of
            ``module``'s parameters.
        module: The module trained through ``loss_fn``; its gradients are set to ``None`` after
            the warm-up, so that the captured backward allocates the static ``.grad`` tensors.
        warmup_iterations: Eager passes on a side stream before the capture.

    """

    def __init__(
        self, loss_fn: LossFn, module: nn.Module, warmup_iterations: int = WARMUP_ITERATIONS
    ) -> None:
        self.loss_fn = loss_fn
        self.module = module
        self.warmup_iterations = warmup_iterations
        self._captured: _CapturedStep | None = None

    def __call__(self, features: Tensor, target: Tensor) -> Tensor:
        """Copy the batch into the static inputs, replay the graph, return the static loss.

        Args:
            features: ``(B, N, in_features)`` inputs on a CUDA device.
            target: ``(B, N, out_features)`` targets.

        Returns:
            The scalar loss: a static tensor, overwritten by the next call, without autograd
            history. The gradients are already in the parameters' ``.grad``.

        """
        key = (features.shape, target.shape, features.dtype, target.dtype, features.device)
        if self._captured is None or self._captured.key != key:
            self._captured = None  # free the old graph's pool before capturing again
            self._captured = self._capture(features, target, key)
        captured = self._captured
        captured.features.copy_(features)
        captured.target.copy_(target)
        captured.graph.replay()
        return captured.loss

    def _capture(self, features: Tensor, target: Tensor, key: tuple[Any, ...]) -> _CapturedStep:
        """Capture forward, loss and backward on static copies of one batch.

        Runs inside the training step, so under Lightning's autocast for mixed precision: the
        capture repeats that autocast with its weight-cast cache off, which graph capture
        requires. Nothing here changes the weights or the optimizer state.
        """
        static_features = features.detach().clone()
        static_target = target.detach().clone()

        def autocast() -> torch.autocast:
            return torch.autocast(
                "cuda",
                dtype=torch.get_autocast_dtype("cuda"),
                enabled=torch.is_autocast_enabled("cuda"),
                cache_enabled=False,
            )

        side_stream = torch.cuda.Stream()
        side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side_stream):
            for _ in range(self.warmup_iterations):
                with autocast():
                    loss = self.loss_fn(static_features, static_target)
                loss.backward()
        torch.cuda.current_stream().wait_stream(side_stream)
        # Warm-up grads go; the captured backward allocates the static .grad tensors.
        self.module.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            with autocast():
                loss = self.loss_fn(static_features, static_target)
            loss.backward()
        return _CapturedStep(key, graph, static_features, static_target, loss.detach())
