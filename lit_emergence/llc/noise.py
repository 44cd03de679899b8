"""Gaussian noise for stacked SGLD chains, drawn only on each restriction's sampled coordinates.

The chains of an estimate are stacked as ``(R, K, P)``: R restrictions, K chains each, P the
coordinates of every parameter tensor that some restriction samples, flattened in the model's
parameter order (row-major within a tensor). Restriction ``r`` owns one
``torch.Generator`` seeded with the run's seed and, at every step, draws
``randn(K, n_r)`` for its ``n_r`` sampled coordinates (in that order) and nothing else.

Consequences, which the tests rely on:

- The noise a chain sees does not depend on what else is batched with it: a restriction run
  inside :func:`~lit_emergence.llc.estimate_llc_many` gets exactly the noise of the same
  restriction run alone with the same seed.
- A restricted estimate gets exactly the noise of the lower-dimensional model whose
  parameters are the sampled coordinates in the same order.
- Restrictions of the same size share their noise values (common random numbers), so
  differences between heads are estimated with less variance; chains within a restriction
  are independent.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RestrictedNoise"]


class RestrictedNoise:
    """Draws N(0, I) on the sampled coordinates of each restriction, zero elsewhere.

    Args:
        masks: Bool (R, P): which coordinates each restriction samples.
        num_chains: Chains per restriction (K).
        seed: Seed of every restriction's generator.
        dtype: Dtype of the noise.

    """

    def __init__(self, masks: Tensor, num_chains: int, seed: int, dtype: torch.dtype) -> None:
        num_restrictions, num_coords = masks.shape
        self.device = masks.device
        self.shape = (num_restrictions, num_chains, num_coords)
        self.dtype = dtype
        self.generators = [
            torch.Generator(device=self.device).manual_seed(seed) for _ in range(num_restrictions)
        ]
        # None = the restriction samples every coordinate: draw straight into its rows
        self.indices: list[Tensor | None] = [
            None if bool(mask.all()) else mask.nonzero().squeeze(1) for mask in masks
        ]
        self.counts = [num_coords if idx is None else idx.numel() for idx in self.indices]
        # fixed storage: a captured CUDA graph reads the noise from here
        self.buffer = torch.zeros(self.shape, dtype=dtype, device=self.device)

    def sample(self) -> Tensor:
        """Draw the next noise (R, K, P) into :attr:`buffer` and return it.

        The buffer is reused: a draw is valid until the next call.
        """
        noise = self.buffer
        _, num_chains, _ = self.shape
        for r, (idx, count, generator) in enumerate(
            zip(self.indices, self.counts, self.generators, strict=True)
        ):
            draw = torch.randn(
                num_chains, count, generator=generator, dtype=self.dtype, device=self.device
            )
            if idx is None:
                noise[r] = draw
            else:  # entries outside idx stay zero from the buffer's creation
                noise[r].index_copy_(1, idx, draw)
        return noise
