"""ParticleTransformer: a transformer whose tokens are the particles of a granular system.

Read top to bottom: :class:`HookPoint` (a named place to observe a tensor),
:class:`MultiHeadSelfAttention`, :class:`MLP`, the pre-norm :class:`Block`, and the model.

Shapes: B scenes, N particles per scene, D = ``d_model``, H = ``n_heads``, Dh = D // H, L blocks.

Layout of a head (used by per-head LLC and gauge transforms): head ``h`` of a block owns the
output slice ``h * Dh:(h + 1) * Dh`` of ``q_proj``, ``k_proj`` and ``v_proj`` (rows of their
``weight``, entries of their ``bias``) and the matching input slice of ``out_proj`` (columns
of its ``weight``); :meth:`MultiHeadSelfAttention.head_slice` returns that slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "Block", "HookPoint", "MultiHeadSelfAttention", "ParticleTransformer"]


class HookPoint(nn.Identity):
    """A named identity module: the place to observe (or replace) an intermediate tensor.

    Register a forward hook on it, as in TransformerLens. A hook that returns a tensor replaces
    the value that flows on, which allows ablation or patching of, e.g., an attention pattern.
    """


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over particles, with a fast and a probe path.

    The fast path (``return_pattern=False``) calls ``F.scaled_dot_product_attention``. The probe
    path computes the softmax explicitly, passes the pattern (B, H, N, N) through
    ``self.hook_pattern`` and returns it; both paths give the same output.

    Args:
        d_model: Width of the residual stream.
        n_heads: Number of heads; ``d_model`` must be divisible by it.
        dropout: Dropout probability on the attention output (not on the pattern).

    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.hook_pattern = HookPoint()  # (B, H, N, N), probe path only

    def head_slice(self, head: int) -> slice:
        """Slice of head ``head`` in the q/k/v outputs and in the inputs of ``out_proj``.

        Args:
            head: Head index in ``[0, n_heads)``.

        Returns:
            ``slice(head * head_dim, (head + 1) * head_dim)``.

        """
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)

    def forward(
        self,
        x: Tensor,
        allowed: Tensor | None = None,
        no_key: Tensor | None = None,
        return_pattern: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from every particle to the particles it may see.

        Args:
            x: Residual stream (B, N, D), already normalised.
            allowed: Bool mask broadcastable to (B, H, N, N), True where query i may attend to
                key j; every row must have at least one True. None: attend everywhere.
            no_key: Bool (B, 1, N, 1), True for queries that have no key to attend to; their
                attention row and output are set to zero. None: every query has a key.
            return_pattern: Use the probe path and return the attention pattern.

        Returns:
            ``(y, pattern)``: y (B, N, D); pattern (B, H, N, N) on the probe path, else None.

        """
        B, N, D = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, H, N, Dh)
        k = self._split_heads(self.k_proj(x))  # (B, H, N, Dh)
        v = self._split_heads(self.v_proj(x))  # (B, H, N, Dh)

        pattern = None
        if return_pattern:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, N, N)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            pattern = scores.softmax(dim=-1)
            if no_key is not None:
                pattern = pattern.masked_fill(no_key, 0.0)
            pattern = self.hook_pattern(pattern)
            z = pattern @ v  # (B, H, N, Dh)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, N, Dh)
            if no_key is not None:
                z = z.masked_fill(no_key, 0.0)

        z = z.transpose(1, 2).reshape(B, N, D)  # heads side by side again: (B, N, D)
        return self.dropout(self.out_proj(z)), pattern


class MLP(nn.Module):
    """Per-particle feed-forward network: Linear -> GELU -> Linear -> Dropout.

    Args:
        d_model: Width of the residual stream.
        hidden: Width of the hidden layer.
        dropout: Dropout probability on the output.

    """

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, N, D) to (B, N, D), each particle on its own."""
        return self.dropout(self.fc_out(F.gelu(self.fc_in(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Args:
        d_model: Width of the residual stream.
        n_heads: Number of attention heads.
        mlp_hidden: Width of the MLP's hidden layer.
        dropout: Dropout probability on the attention and MLP outputs.

    """

    def __init__(self, d_model: int, n_heads: int, mlp_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_hidden, dropout)

    def forward(
        self,
        x: Tensor,
        allowed: Tensor | None = None,
        no_key: Tensor | None = None,
        return_pattern: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Update the residual stream (B, N, D); see :meth:`MultiHeadSelfAttention.forward`."""
        attn_out, pattern = self.attn(self.ln_attn(x), allowed, no_key, return_pattern)
        x = x + attn_out
        x = x + self.mlp(self.ln_mlp(x))
        return x, pattern


class ParticleTransformer(nn.Module):
    """Transformer over the particles of a scene, without positional encoding.

    ``Linear(in_features, d_model)`` embeds each particle, ``n_layers`` pre-norm blocks mix
    them, a final LayerNorm and ``Linear(d_model, out_features)`` read each particle out. With
    no positional encoding the model is permutation equivariant over particles.

    Attention paths: ``forward(features)`` uses ``F.scaled_dot_product_attention`` (the
    training path); ``forward(features, return_attention=True)`` computes the softmax
    explicitly and also returns the attention (B, L, H, N, N). Both give the same output.

    Hook points: on the probe path, block ``l`` passes its pattern (B, H, N, N) through
    ``model.blocks[l].attn.hook_pattern`` (an ``nn.Identity``). A forward hook registered
    there sees the pattern, and a hook that returns a tensor replaces it in the computation;
    the fast path does not compute patterns and does not call the hook point.

    Masking: with ``mask_self`` a particle never attends to itself. ``padding_mask`` (B, N),
    True for real particles, hides padded keys, so padding never changes the outputs of real
    particles (padded features are zeroed first: even NaN there cannot leak). A query with no
    key to attend to (a lone real particle with ``mask_self``, or ``N == 1``) gets an all-zero
    attention row, so its attention output is zero; outputs at padded queries are finite but
    meaningless.

    Dropout applies to each attention output and each MLP output, not to attention patterns.
    Initialisation: Linear weights ~ N(0, 0.02^2), biases zero, LayerNorm weight one, bias zero.

    Args:
        in_features: Features per particle (F).
        out_features: Outputs per particle.
        d_model: Width of the residual stream; divisible by ``n_heads``.
        n_layers: Number of blocks (L).
        n_heads: Attention heads per block (H).
        mlp_ratio: MLP hidden width as a multiple of ``d_model`` (rounded, at least 1).
        dropout: Dropout probability in ``[0, 1)``.
        mask_self: Forbid each particle from attending to itself.

    Raises:
        ValueError: If an argument is out of range (one line naming it).

    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        mask_self: bool = True,
    ) -> None:
        super().__init__()
        for name, value in [
            ("in_features", in_features),
            ("out_features", out_features),
            ("d_model", d_model),
            ("n_layers", n_layers),
        ]:
            if value < 1:
                raise ValueError(f"{name}={value} must be a positive integer; set {name} >= 1")
        if n_heads < 1:
            raise ValueError(f"n_heads={n_heads}: need at least one head; set n_heads >= 1")
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                "choose d_model as a multiple of n_heads"
            )
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be > 0; e.g. set mlp_ratio=4.0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1); e.g. set dropout=0.0")

        self.in_features = in_features
        self.out_features = out_features
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.mask_self = mask_self
        mlp_hidden = max(1, round(mlp_ratio * d_model))

        self.embed = nn.Linear(in_features, d_model)
        self.blocks = nn.ModuleList(
            [Block(d_model, n_heads, mlp_hidden, dropout) for _ in range(n_layers)]
        )
        self.ln_final = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, out_features)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def num_parameters(self) -> int:
        """Return the total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def _attention_mask(
        self, n: int, padding_mask: Tensor | None, device: torch.device
    ) -> tuple[Tensor | None, Tensor | None]:
        """Build the mask shared by all blocks: ``(allowed, no_key)``.

        ``allowed`` is True where query i may attend to key j (broadcastable to
        (B, H, N, N)); ``no_key`` (B, 1, N, 1) is True for queries with no such key, or None
        when every query has one. Rows without a key are opened to all keys so that the
        softmax stays finite; the attention module then zeroes them.
        """
        if padding_mask is None:
            if not self.mask_self:
                return None, None  # attend everywhere: no mask, fastest kernel
            allowed = ~torch.eye(n, dtype=torch.bool, device=device)  # (N, N)
            if n > 1:
                return allowed, None
            # a single particle that may not see itself has no key at all
            no_key = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
            return torch.ones_like(allowed), no_key

        allowed = padding_mask[:, None, None, :]  # (B, 1, 1, N): real keys only
        if self.mask_self:
            allowed = allowed & ~torch.eye(n, dtype=torch.bool, device=device)  # (B, 1, N, N)
        no_key = ~allowed.any(dim=-1, keepdim=True)  # (B, 1, N or 1, 1)
        allowed = allowed | no_key  # keyless rows see everything (then zeroed)
        return allowed, no_key.expand(-1, -1, n, -1)  # (B, 1, N or 1, N), (B, 1, N, 1)

    def forward(
        self,
        features: Tensor,
        padding_mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict per-particle outputs.

        Args:
            features: Per-particle inputs (B, N, in_features).
            padding_mask: Optional bool (B, N), True for real particles, False for padding.
            return_attention: Use the probe path and also return the attention.

        Returns:
            Outputs (B, N, out_features); with ``return_attention`` the tuple
            ``(outputs, attention)`` where attention is (B, L, H, N, N): rows sum to 1 over
            the visible keys (0 for a query with none), self entries are exactly 0 with
            ``mask_self``, entries on padded keys exactly 0.

        """
        B, N, _ = features.shape
        if padding_mask is not None:
            if padding_mask.dtype != torch.bool or padding_mask.shape != (B, N):
                raise ValueError(
                    f"padding_mask must be a bool tensor of shape (B, N) = {(B, N)}, got "
                    f"{padding_mask.dtype} {tuple(padding_mask.shape)}; "
                    "pass a bool mask, True = real particle"
                )
            # zero padded slots so garbage (even NaN) there cannot leak through 0 * value
            features = features.masked_fill(~padding_mask[..., None], 0.0)
        allowed, no_key = self._attention_mask(N, padding_mask, features.device)

        x = self.embed(features)  # (B, N, D)
        patterns = []
        for block in self.blocks:
            x, pattern = block(x, allowed, no_key, return_attention)
            patterns.append(pattern)
        out = self.readout(self.ln_final(x))  # (B, N, out_features)

        if return_attention:
            return out, torch.stack(patterns, dim=1)  # (B, L, H, N, N)
        return out
