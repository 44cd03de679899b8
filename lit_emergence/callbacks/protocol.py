"""What a model and its data must provide for the attention-structure callbacks.

The callbacks find the attention of most models by themselves: every attention layer that
:func:`lit_emergence.heads.attention_layers` recognises (``nn.MultiheadAttention``, also inside
``nn.TransformerEncoder``; Hugging Face BERT-, GPT-2- and LLaMA-style models; TransformerLens;
this package's ``ParticleTransformer``) is recorded during one forward pass of the
LightningModule on the probe batch (:func:`lit_emergence.heads.call_model`). A module can
instead implement one method::

    class MyModule(LightningModule):
        def probe_attention(self, batch: Mapping[str, Tensor]) -> Tensor:
            '''Per-head attention of the tokens of `batch`, shape (B, L, H, N, N):
            entry [b, l, h, i, j] is the attention of query token i on key token j in head h
            of layer l; rows sum to 1 over the keys attended to.'''

or be given ``attention_fn=lambda module, batch: ...`` by the callback. The probe batches —
dicts of tensors, leading dimension B — carry the geometry of the tokens:

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

import weakref
from collections.abc import Callable, Mapping

from lightning.pytorch import LightningModule
from torch import Tensor

from lit_emergence.heads import call_model, capture_attention

AttentionFn = Callable[[LightningModule, Mapping[str, Tensor]], Tensor]


class AttentionCache:
    """Attention of the current step, shared by the monitors that probe the same samples.

    The collision and attention-distance monitors measure the same probe samples after the
    same optimizer step; the first computes the attention, the second reuses it. The cache
    belongs to the callbacks, not to the user's module: it is keyed by the module weakly (so
    it never keeps a model alive), holds one step per module, and keys each batch by its
    samples' ids (the ``index`` key of the probe batch).
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[LightningModule, tuple[int, dict]] = (
            weakref.WeakKeyDictionary()
        )

    def get(
        self,
        pl_module: LightningModule,
        batch: Mapping[str, Tensor],
        step: int,
        compute: Callable[[], Tensor],
    ) -> Tensor:
        """The cached attention of ``batch`` at ``step``, computing it on the first request."""
        cached_step, entries = self._entries.get(pl_module, (None, {}))
        if cached_step != step:
            entries = {}
            self._entries[pl_module] = (step, entries)
        key = tuple(batch["index"].tolist())
        if key not in entries:
            entries[key] = compute()
        return entries[key]

    def clear(self, pl_module: LightningModule) -> None:
        """Forget ``pl_module``'s attention (a new fit may reuse step numbers)."""
        self._entries.pop(pl_module, None)


#: The one cache the monitors share.
SHARED_ATTENTION = AttentionCache()


def probe_attention(
    pl_module: LightningModule,
    batch: Mapping[str, Tensor],
    attention_fn: AttentionFn | None,
    step: int | None = None,
) -> Tensor:
    """Return (B, L, H, N, N) attention for ``batch`` through the documented protocol.

    With ``step`` given and an ``index`` (sample id) key in the batch, the result is shared
    through :data:`SHARED_ATTENTION`, so several callbacks measuring the same samples after
    the same optimizer step compute it once. A custom ``attention_fn`` is never cached.
    """
    if attention_fn is not None:
        return attention_fn(pl_module, batch)
    if step is None or "index" not in batch:
        return _call_protocol(pl_module, batch)
    return SHARED_ATTENTION.get(pl_module, batch, step, lambda: _call_protocol(pl_module, batch))


def _call_protocol(pl_module: LightningModule, batch: Mapping[str, Tensor]) -> Tensor:
    method = getattr(pl_module, "probe_attention", None)
    if method is not None:
        attention = method(batch)
    else:  # any model whose attention layers an adapter recognises: no code needed
        try:
            attention = capture_attention(pl_module, lambda: call_model(pl_module, batch))
        except ValueError as error:
            raise ValueError(
                f"{error}; or give {type(pl_module).__name__} a probe_attention(batch) method "
                "or pass attention_fn= to the callback"
            ) from None
    if attention.dim() != 5:
        raise ValueError(
            "probe_attention must return (B, L, H, N, N) attention, "
            f"got shape {tuple(attention.shape)}"
        )
    return attention
