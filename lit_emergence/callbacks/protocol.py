"""What a model and its data must provide for the attention-structure callbacks.

The callbacks work with any LightningModule that implements one method::

    class MyModule(LightningModule):
        def probe_attention(self, batch: Mapping[str, Tensor]) -> Tensor:
            '''Per-head attention of the tokens of `batch`, shape (B, L, H, N, N):
            entry [b, l, h, i, j] is the attention of query token i on key token j in head h
            of layer l; rows sum to 1 over the keys attended to.'''

(or pass ``attention_fn=lambda module, batch: ...`` to the callback instead), and whose probe
batches — dicts of tensors, leading dimension B — carry the geometry of the tokens:

=============================  ============  ==================================================
key                            shape         needed for
=============================  ============  ==================================================
``positions``                  (B, N, 2)     everything (token i sits at ``positions[b, i]``)
``radii``                      (B, N)        the radius-based collision score (contact distance)
``contacts``                   (B, N, N)     strict and impact scores (ground-truth contacts)
``velocity_change``            (B, N, 2)     impact score (which queries were hit)
``valid``                      (B, N)        optional padding mask, True for real tokens
``frame``                      (B,)          optional: picks free-fall vs settled examples
=============================  ============  ==================================================

Missing optional keys switch the dependent variant off (its column stays empty); the callback
says so once. :class:`~lit_emergence.module.LearnedSimulator` and
:class:`~lit_emergence.data.ParticleDataModule` implement all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lightning.pytorch import LightningModule
from torch import Tensor

AttentionFn = Callable[[LightningModule, Mapping[str, Tensor]], Tensor]


# Attention of the current step, keyed by the probe samples' ids: monitors that probe the same
# samples at the same step (collision and attention-distance) share one forward pass.
_CACHE_ATTRIBUTE = "_lit_emergence_attention_cache"


def probe_attention(
    pl_module: LightningModule,
    batch: Mapping[str, Tensor],
    attention_fn: AttentionFn | None,
    step: int | None = None,
) -> Tensor:
    """Return (B, L, H, N, N) attention for ``batch`` through the documented protocol.

    With ``step`` given and an ``index`` (sample id) key in the batch, the result is cached on
    the module for that step, so several callbacks measuring the same samples after the same
    optimizer step compute it once. A custom ``attention_fn`` is never cached.
    """
    if attention_fn is not None:
        return attention_fn(pl_module, batch)
    if step is None or "index" not in batch:
        return _call_protocol(pl_module, batch)
    cached_step, cache = getattr(pl_module, _CACHE_ATTRIBUTE, (None, {}))
    if cached_step != step:
        cache = {}
        object.__setattr__(pl_module, _CACHE_ATTRIBUTE, (step, cache))
    key = tuple(batch["index"].tolist())
    if key not in cache:
        cache[key] = _call_protocol(pl_module, batch)
    return cache[key]


def clear_attention_cache(pl_module: LightningModule) -> None:
    """Drop cached attention (a new fit may reuse step numbers with other weights)."""
    if hasattr(pl_module, _CACHE_ATTRIBUTE):
        object.__delattr__(pl_module, _CACHE_ATTRIBUTE)


def _call_protocol(pl_module: LightningModule, batch: Mapping[str, Tensor]) -> Tensor:
    method = getattr(pl_module, "probe_attention", None)
    if method is None:
        raise TypeError(
            f"{type(pl_module).__name__} has no probe_attention(batch) method: implement it "
            "(see lit_emergence.callbacks.protocol) or pass attention_fn= to the callback"
        )
    attention = method(batch)
    if attention.dim() != 5:
        raise ValueError(
            "probe_attention must return (B, L, H, N, N) attention, "
            f"got shape {tuple(attention.shape)}"
        )
    return attention
