"""Slow, obviously-correct reference for ``hope.SelfModifyingTitans`` (for tests).

One sequence, one head, one token at a time, the equations of the paper
written literally (Nested Learning, arXiv 2512.24695, Eq. 88 with the
chunk-wise reading of Eq. 90):

    every memory □ reads, and takes gradients at, its weights from the start of its chunk
    k_t = normalize(M_k(x_t)),  v_t = normalize(M_v(x_t)),  y_t = M_mem(q_t)
    η_t = max_lr · σ(M_η(x_t) + b_η),  α_t = σ(M_α(x_t) + b_α)
    v̂_□,t = M_□(v_t);   g = ∇_W ‖M_□(k_t) − v̂_□,t‖²   (autograd, v̂ held fixed)
    A ← (α_t I − η_t k_t k_tᵀ) A − η_t g_A,   S likewise,   B ← α_t B − η_t g_B

It reuses the layer's parameters, never its fast code; the gradient is taken
with ``torch.autograd.grad(create_graph=True)`` so outer gradients can be
compared too. Run it in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.neural.layers.hope import MEMORIES, SelfModifyingTitans


def naive_memory(x: Tensor, w: list[Tensor], kind: str) -> Tensor:
    """M(x) for one memory of one head: x [d]; A [d, h], B [h, out] (, S [d, 1])."""
    a = x @ w[0]
    a = F.silu(a) if kind == "silu" else F.gelu(a)
    out = a @ w[1]
    return out + (x if len(w) == 2 else x @ w[2])


def naive_selfmod(layer: SelfModifyingTitans, x: Tensor) -> tuple[Tensor, dict]:
    """y [B, T, dim] from a fresh state, and the final running weights {memory: [B][H][mats]}."""
    c = layer.config
    kind = c.activation
    B, T, D = x.shape
    H, d = c.heads, c.head_dim
    U = c.unit
    # causal convolution, one tap at a time
    xc = torch.zeros_like(x)
    for t in range(T):
        for j in range(c.conv_kernel):
            src = t - (c.conv_kernel - 1 - j)
            if src >= 0:
                xc[:, t] = xc[:, t] + layer.conv[:, j] * x[:, src]
    q_all = xc @ layer.to_q.weight.T
    ys = torch.zeros(B, T, D, dtype=x.dtype)
    finals: dict = {m: [[None] * H for _ in range(B)] for m in MEMORIES}
    n_write = (T // U) * U  # tokens of whole steps: only they are written
    for b in range(B):
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            W = {m: [p[h].clone() for p in layer.init[m]] for m in MEMORIES}
            start = {m: [w for w in W[m]] for m in MEMORIES}
            for t in range(T):
                for m in MEMORIES:  # a chunk starts: its tokens read the weights as they are now
                    if t % c.chunk_of(m) == 0:
                        start[m] = [w for w in W[m]]
                xt = xc[b, t, sl]
                qt = F.normalize(q_all[b, t, sl], dim=-1)
                kt = F.normalize(naive_memory(xt, start["k"], kind), dim=-1)
                vt = naive_memory(xt, start["v"], kind)
                if c.normalize_v:
                    vt = F.normalize(vt, dim=-1)
                ys[b, t, sl] = naive_memory(qt, start["mem"], kind)
                if t >= n_write:
                    continue
                squash = torch.sigmoid if c.lr_activation == "sigmoid" else F.softplus
                eta = c.max_lr * squash(naive_memory(xt, start["eta"], kind)[0] + layer.lr_bias[h])
                alpha = torch.sigmoid(naive_memory(xt, start["alpha"], kind)[0] + layer.retention_bias[h])
                P = alpha * torch.eye(d, dtype=x.dtype) - eta * torch.outer(kt, kt)
                for m in MEMORIES:
                    with torch.enable_grad():
                        # a copy to differentiate: v̂ (from the originals) stays data
                        ws = [w.clone() if w.requires_grad else w.detach().clone().requires_grad_(True)
                              for w in start[m]]
                        vhat = naive_memory(vt, start[m], kind)
                        loss = (naive_memory(kt, ws, kind) - vhat).pow(2).sum()
                        g = torch.autograd.grad(loss, ws, create_graph=True)
                    A, Bm, *S = W[m]
                    new = [P @ A - eta * g[0], alpha * Bm - eta * g[1]]
                    if S:
                        new.append(P @ S[0] - eta * g[2])
                    W[m] = new
            for m in MEMORIES:
                finals[m][b][h] = W[m]
    return ys @ layer.out.weight.T, finals
