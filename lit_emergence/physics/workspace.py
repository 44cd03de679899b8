"""Reusable scratch tensors for the force kernel's hot loop.

Every integrator step needs several ``(B, N, N)`` temporaries. Allocating them afresh each step
is cheap on CUDA (caching allocator) but costly on CPU, where large blocks come from fresh
pages of the operating system each time; reusing them makes a CPU step several times faster.
Without a workspace (``None``) the kernels allocate new tensors, which is what ``torch.compile``
wants (it then fuses the temporaries away).
"""

from __future__ import annotations

from torch import Tensor


class Workspace:
    """Named scratch tensors, created on first use and reused while shape, dtype and device match.

    A buffer returned by :meth:`buffer` is overwritten by the next call that asks for the same
    name, so results that live in a workspace must be consumed (or copied) before the next step.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def buffer(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Return an uninitialised tensor of ``shape`` with the dtype and device of ``like``.

        Args:
            name: Identifies the buffer; the same name returns the same storage.
            shape: Wanted shape.
            like: Supplies dtype and device.

        Returns:
            The (possibly reused) tensor; its contents are undefined.

        """
        existing = self._buffers.get(name)
        if (
            existing is not None
            and existing.shape == shape
            and existing.dtype == like.dtype
            and existing.device == like.device
        ):
            return existing
        fresh = like.new_empty(shape)
        self._buffers[name] = fresh
        return fresh


def scratch(workspace: Workspace | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Return a buffer from ``workspace``, or a new tensor when there is none.

    Args:
        workspace: Where to reuse buffers from; ``None`` allocates.
        name: Buffer name within the workspace.
        shape: Wanted shape.
        like: Supplies dtype and device.

    Returns:
        An uninitialised tensor.

    """
    if workspace is None:
        return like.new_empty(shape)
    return workspace.buffer(name, shape, like)
