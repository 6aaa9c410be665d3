"""Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024): the linear-recurrent baseline.

Per head, a matrix state ``S [d_k, d_v]`` is decayed by a gate and corrected by
the delta rule, then read by the query::

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T        o_t = S_t^T q_t

with ``a_t = exp(g_t)`` in (0, 1] (forget) and ``b_t`` in (0, 1) (write strength).
``naive_gated_delta_rule`` runs this token by token: obviously right, slow.
``chunk_gated_delta_rule`` computes the same thing a chunk of C tokens at a time
with matrix products (the WY form): within a chunk, the "new values"
``d_t = b_t (v_t - a_t S_{t-1}^T k_t)`` satisfy a unit lower-triangular system,
solved once per chunk; only the loop over chunks is sequential.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def chunk_gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    state: Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """Chunked Gated DeltaNet. ``q, k [B,H,T,Dk]``, ``v [B,H,T,Dv]``, ``g, beta [B,H,T]``.

    ``g`` is the log forget gate (<= 0). Returns ``(o [B,H,T,Dv], S [B,H,Dk,Dv])``.
    """
    out_dtype = v.dtype
    if q.dtype in (torch.float16, torch.bfloat16):
        # Decay products and the triangular solve need float32 (and the solve has
        # no half-precision kernels): under bf16 autocast, compute in float32.
        q, k, v, g, beta = (z.float() for z in (q, k, v, g, beta))
        state = state.float() if state is not None else None
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    c = chunk_size
    pad = (-t) % c
    if pad:
        # Padding tokens with k = v = b = g = 0 leave the state untouched.
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    n = (t + pad) // c
    q, k, v = (z.reshape(b, h, n, c, -1) for z in (q, k, v))
    g, beta = g.reshape(b, h, n, c), beta.reshape(b, h, n, c)

    lg = g.cumsum(-1)  # log of the decay from the chunk start through token i
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    # decay[i, j] = exp(lg_i - lg_j) for j <= i: how much of token j's write survives at i.
    diff = (lg[..., :, None] - lg[..., None, :]).masked_fill(~causal, float("-inf"))
    decay = diff.exp()
    strict = ~torch.ones(c, c, dtype=torch.bool, device=q.device).triu()  # j < i
    # (I + A) D = diag(b) (V - diag(exp lg) K S0), A[i, j] = b_i decay[i, j] k_i.k_j (j < i).
    a = (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).masked_fill(~strict, 0.0)
    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    rhs = torch.cat([beta[..., None] * v, (beta * lg.exp())[..., None] * k], dim=-1)
    solved = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)
    u, w = solved[..., :dv], solved[..., dv:]  # D = U - W S0
    qk = (q @ k.transpose(-1, -2)) * decay  # causal mask is in decay (zeros above)

    s = state if state is not None else q.new_zeros(b, h, dk, dv)
    outs = []
    for i in range(n):
        d = u[:, :, i] - w[:, :, i] @ s
        outs.append((q[:, :, i] * lg[:, :, i, :, None].exp()) @ s + qk[:, :, i] @ d)
        last = lg[:, :, i, -1]
        tail = (last[..., None] - lg[:, :, i]).exp()  # decay from token j to chunk end
        s = s * last.exp()[..., None, None] + (k[:, :, i] * tail[..., None]).transpose(-1, -2) @ d
    o = torch.stack(outs, dim=2).reshape(b, h, n * c, dv)[:, :, :t]
    return o.to(out_dtype), s


def naive_gated_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference: the recurrence one token at a time (same shapes as the chunked form)."""
    b, h, t, dk = k.shape
    s = state if state is not None else q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        s = s * g[:, :, i].exp()[..., None, None]
        ki, vi, bi = k[:, :, i], v[:, :, i], beta[:, :, i, None]
        pred = (s * ki[..., None]).sum(-2)  # S^T k
        s = s + ki[..., None] * (bi * (vi - pred))[..., None, :]
        outs.append((s * q[:, :, i, :, None]).sum(-2))
    return torch.stack(outs, dim=2), s


class ShortConv(nn.Module):
    """Depthwise causal 1-D convolution; streams exactly with a cache of ``size - 1`` inputs."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.randn(channels, 1, size) / size**0.5)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, t, ch = x.shape
        if cache is None:
            cache = x.new_zeros(b, self.size - 1, ch)
        xx = torch.cat([cache, x], dim=1)
        y = F.conv1d(xx.transpose(1, 2), self.weight, groups=ch).transpose(1, 2)
        return y, xx[:, xx.shape[1] - (self.size - 1) :]


class GatedDeltaNet(nn.Module):
    """The sequence mixer: projections, short convs, gates, the delta rule, gated norm."""

    def __init__(self, dim: int, n_heads: int, conv_size: int = 4, chunk_size: int = 32) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.chunk_size = chunk_size
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.a_proj = nn.Linear(dim, n_heads, bias=False)  # forget gate input
        self.b_proj = nn.Linear(dim, n_heads, bias=False)  # write strength
        self.g_proj = nn.Linear(dim, dim, bias=False)  # output gate
        self.o_proj = nn.Linear(dim, dim, bias=False)
        # Mamba-2 style forget gate: g = -exp(A_log) * softplus(a + dt_bias), decay rates
        # spread over heads so some heads remember long and some short.
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, n_heads)))
        dt = torch.exp(torch.linspace(math.log(1e-3), math.log(0.1), n_heads))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.conv_q = ShortConv(dim, conv_size)
        self.conv_k = ShortConv(dim, conv_size)
        self.conv_v = ShortConv(dim, conv_size)
        self.o_norm = nn.RMSNorm(self.head_dim)

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict]:
        b, t, _ = x.shape
        state = state or {}
        q, cq = self.conv_q(self.q_proj(x), state.get("conv_q"))
        k, ck = self.conv_k(self.k_proj(x), state.get("conv_k"))
        v, cv = self.conv_v(self.v_proj(x), state.get("conv_v"))
        q, k, v = (
            F.silu(z).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v)
        )
        # Unit-norm keys keep (I - b k k^T) a contraction: the state cannot blow up.
        q = F.normalize(q, dim=-1) * self.head_dim**-0.5
        k = F.normalize(k, dim=-1)
        beta = torch.sigmoid(self.b_proj(x)).transpose(1, 2)
        g = (-self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)).transpose(1, 2)
        o, s = chunk_gated_delta_rule(q, k, v, g, beta, state.get("S"), self.chunk_size)
        o = self.o_norm(o.transpose(1, 2)) * F.silu(self.g_proj(x)).view(b, t, self.n_heads, -1)
        y = self.o_proj(o.reshape(b, t, -1))
        return y, {"S": s, "conv_q": cq, "conv_k": ck, "conv_v": cv}
