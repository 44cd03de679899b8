"""Gauge-invariant observables of attention heads.

Every gauge transformation (:mod:`lit_emergence.gauge.transforms`) leaves these unchanged, and
a head permutation permutes them with the heads:

* the QK circuit ``W_QK = W_Q W_K^T`` (D, D), the bilinear form the attention scores are made
  of (``score_ij = x_i W_QK x_j^T + ...``), and the OV circuit ``W_OV = W_V W_O`` (D, D), what
  an attended particle writes into the attending particle's residual stream. Both have rank at
  most Dh. Observables: their singular values, Frobenius and spectral norms, and effective
  rank ``exp(entropy of s / sum(s))`` (Roy and Vetterli 2007; between 1 and Dh);
* the bias terms that reach the function: ``b_Q W_K^T`` (D,), the query-independent preference
  of a head for some keys, and ``b_V W_O`` (D,), the constant a head writes whenever it attends
  (its norms). ``W_Q b_K^T`` and ``b_Q b_K^T`` are invariant too but act the same on every key,
  so softmax removes them;
* for block 0 only, the QK circuit seen through the embedding and the first LayerNorm on the
  physical input features (:func:`feature_space_qk`).

The weights themselves (e.g. ``|W_Q|``) are not invariant: a condition-number-100 gauge
transformation changes them by orders of magnitude while the function stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from lit_emergence.gauge.heads import HeadWeights, attention_modules, read_heads
from lit_emergence.gauge.lowrank import factored_singular_values

__all__ = [
    "SCALAR_OBSERVABLES",
    "HeadInvariants",
    "effective_rank",
    "feature_space_qk",
    "head_invariants",
    "ov_circuit",
    "qk_circuit",
]


def qk_circuit(heads: HeadWeights) -> Tensor:
    """``W_QK = W_Q W_K^T`` per head, (H, D, D)."""
    return heads.query @ heads.key.transpose(1, 2)


def ov_circuit(heads: HeadWeights) -> Tensor:
    """``W_OV = W_V W_O`` per head, (H, D, D)."""
    return heads.value @ heads.output


def effective_rank(singular_values: Tensor) -> Tensor:
    """Entropy effective rank ``exp(-sum p log p)``, ``p = s / sum(s)``, over the last axis.

    Args:
        singular_values: (..., r) non-negative.

    Returns:
        (...) values in ``[1, r]``; 0 where every singular value is 0.

    """
    total = singular_values.sum(dim=-1, keepdim=True)
    p = singular_values / total.clamp_min(torch.finfo(singular_values.dtype).tiny)
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


#: Per-head scalar observables, in the order of the history columns.
SCALAR_OBSERVABLES = (
    "qk_frobenius",
    "qk_spectral",
    "qk_effective_rank",
    "qk_bias_norm",
    "ov_frobenius",
    "ov_spectral",
    "ov_effective_rank",
    "ov_bias_norm",
)


@dataclass
class HeadInvariants:
    """Gauge-invariant observables of every head of a model (float64).

    Attributes:
        qk_singular_values: (L, H, Dh) singular values of ``W_QK``, descending.
        ov_singular_values: (L, H, Dh) singular values of ``W_OV``, descending.
        qk_bias_norm: (L, H) ``|b_Q W_K^T|``.
        ov_bias_norm: (L, H) ``|b_V W_O|``.
        feature_qk: (H, F, F) block 0's QK circuit on the input features
            (:func:`feature_space_qk`), or None for a model without ``embed``/``ln_attn``.

    """

    qk_singular_values: Tensor
    ov_singular_values: Tensor
    qk_bias_norm: Tensor
    ov_bias_norm: Tensor
    feature_qk: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(L, H)``."""
        L, H, _ = self.qk_singular_values.shape
        return L, H

    @property
    def qk_frobenius(self) -> Tensor:
        """(L, H) Frobenius norm of ``W_QK``."""
        return self.qk_singular_values.norm(dim=-1)

    @property
    def qk_spectral(self) -> Tensor:
        """(L, H) spectral norm of ``W_QK``."""
        return self.qk_singular_values[..., 0]

    @property
    def qk_effective_rank(self) -> Tensor:
        """(L, H) effective rank of ``W_QK``."""
        return effective_rank(self.qk_singular_values)

    @property
    def ov_frobenius(self) -> Tensor:
        """(L, H) Frobenius norm of ``W_OV``."""
        return self.ov_singular_values.norm(dim=-1)

    @property
    def ov_spectral(self) -> Tensor:
        """(L, H) spectral norm of ``W_OV``."""
        return self.ov_singular_values[..., 0]

    @property
    def ov_effective_rank(self) -> Tensor:
        """(L, H) effective rank of ``W_OV``."""
        return effective_rank(self.ov_singular_values)

    def scalars(self) -> dict[str, Tensor]:
        """Every per-head scalar observable by name, each (L, H)."""
        return {name: getattr(self, name) for name in SCALAR_OBSERVABLES}

    def permute_heads(self, permutation: Tensor) -> HeadInvariants:
        """The invariants after head permutation ``permutation`` (L, H) (slot h <- head p)."""
        order = permutation.long().cpu()

        def move(value: Tensor | None, layered: bool = True) -> Tensor | None:
            if value is None:
                return None
            if not layered:  # feature_qk: block 0 only
                return value[order[0]]
            return torch.stack([value[layer, order[layer]] for layer in range(len(order))])

        return HeadInvariants(
            **{
                f.name: move(getattr(self, f.name), layered=f.name != "feature_qk")
                for f in fields(self)
            }
        )

    def rows(self) -> list[dict[str, Any]]:
        """One dict per head: ``layer``, ``head``, the scalars, ``qk_sv<i>`` and ``ov_sv<i>``."""
        L, H = self.shape
        scalars = {name: value.tolist() for name, value in self.scalars().items()}
        qk, ov = self.qk_singular_values.tolist(), self.ov_singular_values.tolist()
        rows = []
        for layer in range(L):
            for head in range(H):
                row: dict[str, Any] = {"layer": layer, "head": head}
                row.update({name: value[layer][head] for name, value in scalars.items()})
                row.update({f"qk_sv{i}": s for i, s in enumerate(qk[layer][head])})
                row.update({f"ov_sv{i}": s for i, s in enumerate(ov[layer][head])})
                rows.append(row)
        return rows


def _embedding_and_norm(model: nn.Module) -> tuple[nn.Linear, nn.LayerNorm] | None:
    inner = model if hasattr(model, "blocks") else getattr(model, "model", None)
    embed = getattr(inner, "embed", None)
    blocks = getattr(inner, "blocks", None)
    norm = getattr(blocks[0], "ln_attn", None) if isinstance(blocks, nn.ModuleList) else None
    if isinstance(embed, nn.Linear) and isinstance(norm, nn.LayerNorm):
        return embed, norm
    return None


def feature_space_qk(model: nn.Module) -> Tensor:
    """Block 0's QK circuit on the normalised particle features, per head: (H, F, F).

    Block 0 attends over ``y_i = LayerNorm(embed(f_i))``. LayerNorm centres (``P = I - 11^T/D``),
    divides by the per-particle standard deviation ``sigma_i`` and scales by ``gamma``, so the
    part of the score that is bilinear in the features is

        ``f_i^T [E^T P diag(gamma) W_QK diag(gamma) P E] f_j / (sigma_i sigma_j)``,

    with ``E`` the embedding weight (D, F). This returns the bracket. It is gauge invariant and,
    unlike ``W_QK``, comparable across runs (the features are physical: positions in disc
    diameters, normalised velocities, ...). Read it up to the positive per-particle factor
    ``1 / (sigma_i sigma_j)``: its sign pattern and the relative weights of the features are
    meaningful, its absolute scale is not. Later blocks see a residual stream already mixed
    by attention and MLPs: there is no such reading for them.

    Args:
        model: A :class:`~lit_emergence.model.ParticleTransformer` or a module holding one as
            ``.model``.

    Returns:
        (H, F, F) float64.

    Raises:
        ValueError: If the model has no ``embed`` Linear and block-0 ``ln_attn`` LayerNorm.

    """
    found = _embedding_and_norm(model)
    if found is None:
        raise ValueError("feature_space_qk needs model.embed (Linear) and blocks[0].ln_attn")
    embed, norm = found
    weight = embed.weight.detach().to(torch.float64)  # (D, F)
    D = weight.shape[0]
    centring = torch.eye(D, dtype=torch.float64, device=weight.device) - 1.0 / D
    gain = norm.weight.detach().to(torch.float64) if norm.weight is not None else 1.0
    to_attention = (centring @ weight) * torch.as_tensor(gain).reshape(-1, 1)  # (D, F)
    circuit = qk_circuit(read_heads(attention_modules(model)[0]))  # (H, D, D)
    return to_attention.T @ circuit @ to_attention


def head_invariants(model: nn.Module) -> HeadInvariants:
    """Compute every gauge-invariant observable of every head of ``model``.

    Args:
        model: Any model whose attention layers :func:`lit_emergence.heads.attention_layers`
            recognises (a ``ParticleTransformer`` or ``LearnedSimulator``, an
            ``nn.TransformerEncoder``, a Hugging Face model, ...). ``feature_qk`` is filled for
            ``ParticleTransformer`` layouts only.

    Returns:
        The :class:`HeadInvariants` (float64, on CPU).

    """
    qk_sv, ov_sv, qk_bias, ov_bias = [], [], [], []
    with torch.no_grad():
        for attn in attention_modules(model):
            heads = read_heads(attn)
            qk_sv.append(factored_singular_values(heads.query, heads.key))
            ov_sv.append(factored_singular_values(heads.value, heads.output.transpose(1, 2)))
            key_preference = (heads.query_bias.unsqueeze(1) @ heads.key.transpose(1, 2)).squeeze(1)
            qk_bias.append(key_preference.norm(dim=-1))
            ov_bias.append((heads.value_bias.unsqueeze(1) @ heads.output).squeeze(1).norm(dim=-1))
        feature_qk = feature_space_qk(model) if _embedding_and_norm(model) else None
    return HeadInvariants(
        qk_singular_values=torch.stack(qk_sv).cpu(),
        ov_singular_values=torch.stack(ov_sv).cpu(),
        qk_bias_norm=torch.stack(qk_bias).cpu(),
        ov_bias_norm=torch.stack(ov_bias).cpu(),
        feature_qk=None if feature_qk is None else feature_qk.cpu(),
    )
