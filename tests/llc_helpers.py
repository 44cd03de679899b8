"""What the LLC tests share: a bare parameter vector model and a one-thread fixture."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

F64 = torch.float64
DUMMY_BATCHES = [torch.zeros(1)]  # losses that depend on the parameters only


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Coordinates(nn.Module):
    """A bare parameter vector (at ``center``, default 0): ``forward`` returns it."""

    def __init__(self, dim: int, center: Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=F64) if center is None else center.clone())

    def forward(self, _: Tensor) -> Tensor:
        return self.w
