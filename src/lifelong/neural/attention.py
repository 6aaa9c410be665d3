"""Causal softmax attention with RoPE: full, sliding-window, and with persistent tokens.

One module covers the three uses in this package:

- the Transformer baseline: every query sees all earlier tokens;
- sliding-window attention (SWA, and the attention of Titans MAG/MAL): a query
  sees the last ``window`` tokens, itself included, so a stream needs a KV cache
  of only ``window - 1`` tokens -- constant memory however long the stream;
- Titans MAC: attention inside one segment over [persistent | retrieved memory | segment].

``n_persistent`` learnable tokens (Titans' persistent memory) are projected to
keys and values like any token and are visible to every query regardless of the
window; they carry no position, so RoPE leaves them unrotated.

``qk_norm`` (E2E-TTT's backbone) RMS-normalises each head's queries and keys, with
a learned gain, before RoPE.

Streaming state is a dict ``{"k", "v", "pos"}``: cached keys/values after RoPE
and the absolute position of the next token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttnState = dict[str, Tensor | int]


def rope(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotate channel pairs of ``x [B, H, T, D]`` by angles ``position * base^(-2i/D)``."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = positions.to(x.dtype)[:, None] * freqs[None, :]  # [T, D/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        window: int | None = None,
        n_persistent: int = 0,
        rope_base: float = 10000.0,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.window = window
        self.rope_base = rope_base
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        # QK-norm: queries and keys RMS-normalised per head (learned gain) before RoPE
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        self.persistent = None
        if n_persistent:
            self.persistent = nn.Parameter(torch.randn(n_persistent, dim) * 0.02)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def _persistent_kv(self, batch: int) -> tuple[Tensor, Tensor] | None:
        if self.persistent is None:
            return None
        _, k, v = self.qkv(self.persistent).chunk(3, dim=-1)
        k = self._heads(k.unsqueeze(0)).expand(batch, -1, -1, -1)
        v = self._heads(v.unsqueeze(0)).expand(batch, -1, -1, -1)
        return k, v

    def forward(
        self, x: Tensor, state: AttnState | None = None, aligned: Tensor | None = None
    ) -> tuple[Tensor, AttnState]:
        """Attend causally over ``x [B, T, dim]`` (plus cached tokens from ``state``).

        ``aligned [B, T, dim]`` (MAC) are extra tokens paired with the positions of
        ``x``: query ``i`` sees ``aligned[:i+1]`` as well as ``x[:i+1]``. They are
        not cached: MAC attention lives within one segment.
        """
        b, t, _ = x.shape
        pos = int(state["pos"]) if state is not None else 0
        q, k, v = (self._heads(z) for z in self.qkv(x).chunk(3, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q_pos = torch.arange(pos, pos + t, device=x.device)
        q, k = rope(q, q_pos, self.rope_base), rope(k, q_pos, self.rope_base)

        if state is not None and state["k"].shape[2] > 0:
            cache_k, cache_v = state["k"], state["v"]
            k_all, v_all = torch.cat([cache_k, k], dim=2), torch.cat([cache_v, v], dim=2)
        else:
            k_all, v_all = k, v
        k_pos = torch.arange(pos + t - k_all.shape[2], pos + t, device=x.device)

        extra = self._persistent_kv(b)
        if aligned is not None:
            _, ak, av = (self._heads(z) for z in self.qkv(aligned).chunk(3, dim=-1))
            ak = rope(ak, q_pos, self.rope_base)
            out = self._attend_aligned(q, k, v, ak, av, extra)
        elif extra is None and self.window is None and k_all.shape[2] == t:
            # Plain causal attention over a fresh sequence: the fused kernel.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = self._attend_blocks(q, q_pos, k_all, v_all, k_pos, extra)

        y = self.proj(out.transpose(1, 2).reshape(b, t, -1))
        keep = k_all.shape[2] if self.window is None else min(self.window - 1, k_all.shape[2])
        new_state: AttnState = {
            "k": k_all[:, :, k_all.shape[2] - keep :],
            "v": v_all[:, :, v_all.shape[2] - keep :],
            "pos": pos + t,
        }
        return y, new_state

    def _attend_blocks(
        self,
        q: Tensor,
        q_pos: Tensor,
        k: Tensor,
        v: Tensor,
        k_pos: Tensor,
        extra: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        # Queries go in blocks of ``window`` so a long sliding-window pass costs
        # O(T * window) memory, not the O(T^2) of one dense mask.
        t = q.shape[2]
        block = self.window if self.window is not None else t
        block = max(block, 16)
        outs = []
        for s in range(0, t, block):
            qb, qp = q[:, :, s : s + block], q_pos[s : s + block]
            lo = int(qp[0]) - self.window + 1 if self.window is not None else int(k_pos[0])
            # k_pos is consecutive, so the keys in [lo, qp[-1]] are a slice (a view, not a gather)
            first = int(k_pos[0])
            sel = slice(max(lo - first, 0), int(qp[-1]) - first + 1)
            kb, vb, kp = k[:, :, sel], v[:, :, sel], k_pos[sel]
            diff = qp[:, None] - kp[None, :]
            mask = diff >= 0
            if self.window is not None:
                mask &= diff < self.window
            if extra is not None:
                kb = torch.cat([extra[0], kb], dim=2)
                vb = torch.cat([extra[1], vb], dim=2)
                mask = torch.cat([mask.new_ones(len(qp), extra[0].shape[2]), mask], dim=1)
            outs.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask))
        return torch.cat(outs, dim=2)

    def _attend_aligned(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        ak: Tensor,
        av: Tensor,
        extra: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        t = q.shape[2]
        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        keys, values, masks = [ak, k], [av, v], [causal, causal]
        if extra is not None:
            keys.insert(0, extra[0])
            values.insert(0, extra[1])
            masks.insert(0, causal.new_ones(t, extra[0].shape[2]))
        return F.scaled_dot_product_attention(
            q, torch.cat(keys, dim=2), torch.cat(values, dim=2), attn_mask=torch.cat(masks, dim=1)
        )
