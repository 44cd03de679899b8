r"""The Langevin transition of stacked chains: SGLD and RMSProp-preconditioned SGLD.

Chains are stacked as ``w`` of shape ``(R, K, P)`` (R restrictions, K chains, P coordinates;
see :mod:`lit_emergence.llc.noise`). With ``g = grad L_batch(w)`` the gradient of the mean
minibatch loss, ``m`` the restriction's 0/1 mask, ``eps`` the step size, ``gamma`` the
localisation, ``n_beta`` the inverse temperature times the sample size and
``xi ~ N(0, I)`` (zero outside the mask):

SGLD (Welling & Teh 2011, localised as in Lau et al. 2023)::

    w <- w - m * (eps / 2) * [n_beta g + gamma (w - w*)] + sqrt(eps) xi

RMSProp-SGLD (Li et al. 2016, pSGLD without the Gamma correction term; the same form as
devinterp's ``rmsprop_sgld``), with ``V_0 = 0``, decay ``alpha`` (0.99) and stabiliser
``delta`` (0.1)::

    V <- alpha V + (1 - alpha) g^2            # g unscaled by n_beta; no bias correction
    G  = 1 / (sqrt(V) + delta)
    w <- w - m * (eps / 2) * G * [n_beta g + gamma (w - w*)] + sqrt(eps G) xi

Frozen coordinates (``m = 0``) get zero drift and zero noise, so they stay exactly at ``w*``.
:meth:`LangevinKernel.potential` gives the potential ``U = n_beta L + gamma/2 |w - w*|^2``
and its gradient on the sampled coordinates, and :attr:`LangevinKernel.noise_scale` the
width of the last step's proposal, for the MALA acceptance
(:mod:`lit_emergence.llc.diagnostics`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SAMPLERS", "LangevinKernel"]

SAMPLERS = ("sgld", "rmsprop_sgld")
"""Names accepted by ``estimate_llc(sampler=...)``."""


class LangevinKernel:
    """One SGLD / RMSProp-SGLD step for all stacked chains, in place.

    Args:
        sampler: ``"sgld"`` or ``"rmsprop_sgld"``.
        center: ``w*`` (P,), the point of estimation.
        masks: Bool (R, P), coordinates each restriction samples.
        num_chains: Chains per restriction (K).
        step_size: Per-restriction step size eps (R,).
        localization: Per-restriction localisation gamma (R,).
        n_beta: Inverse temperature times sample size.
        rmsprop_alpha: RMSProp decay of the squared-gradient average.
        rmsprop_eps: RMSProp stabiliser delta added to ``sqrt(V)``.

    """

    def __init__(
        self,
        sampler: str,
        center: Tensor,
        masks: Tensor,
        num_chains: int,
        step_size: Tensor,
        localization: Tensor,
        n_beta: float,
        rmsprop_alpha: float = 0.99,
        rmsprop_eps: float = 0.1,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is unknown; use one of {SAMPLERS}")
        dtype, device = center.dtype, center.device
        self.sampler = sampler
        self.center = center  # (P,)
        self.step_size = step_size.to(dtype=dtype, device=device)[:, None, None]  # (R, 1, 1)
        self.mask = masks.to(dtype)[:, None, :]  # (R, 1, P)
        self.masked_half_step = self.mask * (self.step_size / 2)  # (R, 1, P)
        self.sqrt_step = self.step_size.sqrt()
        self.localization = localization.to(dtype=dtype, device=device)[:, None, None]
        self.n_beta = n_beta
        self.alpha = rmsprop_alpha
        self.delta = rmsprop_eps
        shape = (masks.shape[0], num_chains, masks.shape[1])
        self.square_avg = (
            torch.zeros(shape, dtype=dtype, device=device) if sampler == "rmsprop_sgld" else None
        )
        # the noise scale of the last step, sqrt(eps) or sqrt(eps G): the proposal's width
        self.noise_scale: Tensor = self.sqrt_step

    def step(self, w: Tensor, grad: Tensor, noise: Tensor) -> None:
        """Advance every chain by one step, in place.

        Args:
            w: Chains (R, K, P); updated in place.
            grad: Gradient of the minibatch loss at ``w`` (R, K, P).
            noise: Standard normal draws (R, K, P), zero outside each restriction's mask.

        """
        drift = torch.add(self.localization * (w - self.center), grad, alpha=self.n_beta)
        if self.square_avg is None:
            w.addcmul_(drift, self.masked_half_step, value=-1.0)
            w.addcmul_(noise, self.sqrt_step)
            return
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1.0 - self.alpha)
        precondition = (self.square_avg.sqrt() + self.delta).reciprocal_()  # G
        w.addcmul_(drift * precondition, self.masked_half_step, value=-1.0)
        self.noise_scale = (precondition * self.step_size).sqrt_()
        w.addcmul_(noise, self.noise_scale)

    def potential(self, w: Tensor, grad: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
        """``U = n_beta L + gamma/2 |w - w*|^2`` and its gradient on the sampled coordinates.

        Args:
            w: Chains (R, K, P).
            grad: Gradient of the minibatch loss at ``w`` (R, K, P).
            loss: Minibatch loss at ``w`` (R, K).

        Returns:
            ``(U, F)``: U (R, K) in float64; F (R, K, P), zero on frozen coordinates.

        """
        offset = (w - self.center) * self.mask
        energy = self.n_beta * loss.to(torch.float64) + (
            self.localization.to(torch.float64) / 2
        ).squeeze(-1) * (offset * offset).sum(dim=-1, dtype=torch.float64)
        force = torch.add(self.localization * offset, grad, alpha=self.n_beta) * self.mask
        return energy, force
