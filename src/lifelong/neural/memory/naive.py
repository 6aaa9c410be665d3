"""Slow, obviously-correct references for ``lifelong.neural.memory`` (for tests).

Everything here loops: over sequences, heads, chunks and tokens, and takes each
inner gradient with ``torch.autograd.grad`` instead of the hand-written
backward pass. It reuses the module's *parameters*, never its fast code, and
follows the equations of the paper literally:

    ℓ(M; k, v) = ‖M(k) − v‖²
    S_t = η_t S_{t−1} − θ_t ∇ℓ(M_{t'}; k_t, v_t)        (t' = start of t's chunk)
    M_t = (1 − α_t) M_{t−1} + S_t
    y_t = M_{t'}(q_t)

and, for ``update="bounded"``, the same with momentum as an average and the
chunk's step divided by the Gershgorin bound of its keys' Gram matrix:

    G_n = max(1, max_{i∈n} Σ_{j∈n} |k_i · k_j|),   θ̃_t = max_lr σ(·) / G_n
    S_t = η_t S_{t−1} + (1 − η_t) (−θ̃_t ∇ℓ(M_{t'}; k_t, v_t))

Run it in float64 and compare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.neural.memory import NeuralMemory, NeuralMemoryConfig


def naive_mlp(weights: list[Tensor], x: Tensor) -> Tensor:
    """M(x) for one memory: x [d] or [n, d], weights [in, out] per layer."""
    h = x
    for i, w in enumerate(weights):
        h = h @ w
        if i < len(weights) - 1:
            h = F.silu(h)
    return h


def naive_project(memory: NeuralMemory, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k, v [B, H, T, d] and gate logits [B, H, T, 3] with a per-tap convolution loop."""
    cfg = memory.config
    B, T, _ = x.shape
    H, d, K = cfg.heads, cfg.head_dim, cfg.conv_kernel
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # RMS-normalized input
    raw = x @ memory.to_qkv.weight.T  # [B, T, 3Hd]
    mixed = torch.zeros_like(raw)
    for t in range(T):
        for j in range(K):  # tap j looks back K-1-j tokens; before the start: zeros
            src = t - (K - 1 - j)
            if src >= 0:
                mixed[:, t] = mixed[:, t] + memory.conv[:, j] * raw[:, src]
    qkv = F.silu(mixed).view(B, T, 3, H, d)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    if cfg.value_norm:
        v = v / v.norm(dim=-1, keepdim=True)
    gates = (x @ memory.to_gates.weight.T + memory.to_gates.bias).view(B, T, 3, H)
    return q, k, v, gates.permute(0, 3, 1, 2)


def naive_inner(
    config: NeuralMemoryConfig, init_weights: list[Tensor], q: Tensor, k: Tensor, v: Tensor,
    gates: Tensor,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The memory recurrence for one head of one sequence, from the initial weights.

    q, k, v [T, d], gates [T, 3]. Returns y [T, d] and the final weights and momentum.
    Tokens after the last complete chunk are read but not written.
    """
    cfg = config
    b, T = cfg.chunk_size, q.shape[0]
    theta = cfg.max_lr * torch.sigmoid(gates[:, 0])
    W = [w.clone() for w in init_weights]
    S = [torch.zeros_like(w) for w in W]
    ys = []
    for start in range(0, T, b):
        idx = range(start, min(start + b, T))
        W0 = [w for w in W]
        for t in idx:  # retrieval reads the chunk-start weights
            ys.append(naive_mlp(W0, q[t]))
        if len(idx) < b:
            break
        grads = []
        for t in idx:  # ∇ℓ(M_{t'}; k_t, v_t) by autograd, one token at a time
            with torch.enable_grad():
                Wg = [w if w.requires_grad else w.detach().requires_grad_(True) for w in W0]
                loss = (naive_mlp(Wg, k[t]) - v[t]).pow(2).sum()
                grads.append(torch.autograd.grad(loss, Wg, create_graph=True))
        bounded = cfg.update == "bounded"
        if bounded:  # Gershgorin bound of the chunk's Gram matrix, row by row
            rows = [sum(torch.abs(torch.dot(k[i], k[j])) for j in idx) for i in idx]
            bound = torch.clamp(torch.max(torch.stack(rows)), min=1.0)
            step = [theta[t] / bound for t in range(T)]  # θ̃_t (only this chunk's are used)
        else:
            step = theta
        if cfg.gates == "token":
            for j, t in enumerate(idx):
                alpha = torch.sigmoid(gates[t, 1])
                eta = cfg.max_momentum * torch.sigmoid(gates[t, 2]) if cfg.momentum else 0.0
                if bounded:  # S_t = η_t S_{t−1} + (1 − η_t)(−θ̃_t ∇ℓ_t)
                    S = [eta * s + (1 - eta) * (-step[t] * g) for s, g in zip(S, grads[j])]
                else:  # S_t = η_t S_{t−1} − θ_t ∇ℓ_t
                    S = [eta * s - step[t] * g for s, g in zip(S, grads[j])]
                W = [(1 - alpha) * w + s for w, s in zip(W, S)]
        else:
            mean = gates[list(idx), 1:].mean(0)
            alpha = torch.sigmoid(mean[0])
            eta = cfg.max_momentum * torch.sigmoid(mean[1]) if cfg.momentum else 0.0
            G = [sum(step[t] * grads[j][i] for j, t in enumerate(idx)) for i in range(len(W))]
            if bounded:
                S = [eta * s + (1 - eta) * (-g) for s, g in zip(S, G)]
            else:
                S = [eta * s - g for s, g in zip(S, G)]
            W = [(1 - alpha) * w + s for w, s in zip(W, S)]
        if not cfg.momentum:
            S = [torch.zeros_like(w) for w in W]  # the module keeps no momentum then
    return torch.stack(ys), W, S


def naive_forward(memory: NeuralMemory, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """y [B, T, dim] from a fresh state; final weights and momentum [B, H, in, out] per layer."""
    cfg = memory.config
    B, T, _ = x.shape
    q, k, v, gates = naive_project(memory, x)
    Ws = [[[None] * cfg.heads for _ in range(B)] for _ in range(cfg.depth)]
    Ss = [[[None] * cfg.heads for _ in range(B)] for _ in range(cfg.depth)]
    ys_list = []
    for bi in range(B):
        row = []
        for h in range(cfg.heads):
            init = [w[h] for w in memory.init_weights]
            y, W, S = naive_inner(cfg, init, q[bi, h], k[bi, h], v[bi, h], gates[bi, h])
            row.append(y)
            for layer in range(cfg.depth):
                Ws[layer][bi][h] = W[layer]
                Ss[layer][bi][h] = S[layer]
        ys_list.append(torch.stack(row))
    ys = torch.stack(ys_list)  # [B, H, T, d]
    # output: per-head RMS norm, sigmoid gate from x, projection
    ys = ys / torch.sqrt(ys.pow(2).mean(-1, keepdim=True) + 1e-6) * memory.out_norm[:, None, :]
    flat = ys.permute(0, 2, 1, 3).reshape(B, T, -1)
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    out = (flat * torch.sigmoid(x @ memory.to_gate.weight.T)) @ memory.to_out.weight.T
    weights = [torch.stack([torch.stack(Ws[layer][bi]) for bi in range(B)]) for layer in range(cfg.depth)]
    momentum = [torch.stack([torch.stack(Ss[layer][bi]) for bi in range(B)]) for layer in range(cfg.depth)]
    return out, weights, momentum
