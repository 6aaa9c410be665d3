"""Slow, obviously-correct reference for a model that learns in context through its CMS.

One sequence, one token at a time, Eq. 70–72 of Nested Learning (arXiv
2512.24695) written literally:

    y_t = MLP^(f_k)(… MLP^(f_1)(x_t))   with each level's weights as they are at t
    G^(ℓ) += ∇_{θ^(ℓ)} L_t,   L_t = −log p(x_{t+1} | x_≤t)      (autograd, per token)

(∇ through the tokens of the current step of ``min C`` tokens — they share the
weights — while what earlier steps computed is data: each step takes its
gradient at its own handle on the weights.)
    θ^(ℓ) ← θ^(ℓ) − η^(ℓ) G^(ℓ),  G^(ℓ) ← 0       when t + 1 ≡ 0 (mod C^(ℓ))   (Eq. 71)

A token's gradient exists once its label (the next token) is read, so a
level's write at t + 1 ≡ 0 happens only if token t + 1 exists. Sequence mixers
(attention, self-modifying Titans) run through the model's own modules one
token at a time with their states; the CMS levels, the losses, the sums and
the writes are written out here. Run it in float64 and compare with
``CausalLM.forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.neural.layers.cms import ContinuumMemory


def naive_level(x: Tensor, w: list[Tensor], activation: str) -> Tensor:
    """One gated MLP level: x [d]; gate, up [d, h]; down [h, d]."""
    a = x @ w[0]
    a = F.silu(a) if activation == "silu" else F.gelu(a, approximate="tanh")
    return (a * (x @ w[1])) @ w[2]


def naive_cms(cms: ContinuumMemory, x: Tensor, weights: list[list[Tensor]]) -> Tensor:
    """The CMS block on one token with the given level weights (Eq. 70, or 74 for headwise)."""
    c = cms.config

    def norm(i: int, h: Tensor) -> Tensor:
        if not c.norm:
            return h
        return h / torch.sqrt(h.pow(2).mean() + c.norm_eps) * cms.norms[i]

    if c.variant == "headwise":
        h = norm(0, x)
        agg = torch.softmax(cms.agg, dim=0)
        return x + sum(agg[i] * naive_level(h, weights[i], c.activation) for i in range(c.levels))
    for i in range(c.levels):
        x = x + naive_level(norm(i, x), weights[i], c.activation)
    return x


def naive_in_context(model, ids: Tensor) -> tuple[Tensor, list]:
    """Logits [1, T, V] of ``ids [1, T]`` and every block's final level weights."""
    assert ids.shape[0] == 1, "one sequence at a time"
    T = ids.shape[1]
    blocks = list(model.blocks)
    cms_list = [b.mlp for b in blocks]
    c = cms_list[0].config
    W = [[[p[i].clone() for p in (m.gate, m.up, m.down)] for i in range(c.levels)] for m in cms_list]
    G = [[[torch.zeros_like(w) for w in lvl] for lvl in Wb] for Wb in W]
    nested = c.variant == "nested"
    INIT = [[list(lvl) for lvl in Wb[1:]] for Wb in W] if nested else None
    IG = [[[torch.zeros_like(w) for w in lvl] for lvl in Wb[1:]] for Wb in W] if nested else None
    lrs = [m.lrs() for m in cms_list]
    mixer_states = [[None] * len(b.mixers) for b in blocks]
    logits_all = []
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # second derivatives
        step = c.step
        for t in range(T):
            if t % step == 0:  # a step starts: fresh handles on the weights
                W = [[[w.view_as(w) for w in lvl] for lvl in Wb] for Wb in W]
            x = model.embed(ids[:, t : t + 1])
            for bi, block in enumerate(blocks):
                for j, (norm, mixer) in enumerate(zip(block.mixer_norms, block.mixers)):
                    y, mixer_states[bi][j] = mixer(norm(x), mixer_states[bi][j])
                    x = x + y
                x = naive_cms(cms_list[bi], x[0, 0], W[bi])[None, None]
            logits = model.head(model.norm(x))
            logits_all.append(logits)
            if t + 1 >= T:
                break  # no label for the last token: its step never closes
            loss = F.cross_entropy(logits[0, 0][None], ids[0, t + 1][None], reduction="sum")
            flat = [w for Wb in W for lvl in Wb for w in lvl]
            grads = list(torch.autograd.grad(loss, flat, create_graph=True))
            for bi in range(len(blocks)):
                for i in range(c.levels):
                    for j in range(3):
                        g = grads.pop(0)
                        G[bi][i][j] = G[bi][i][j] + g
                        if nested and i >= 1:
                            IG[bi][i - 1][j] = IG[bi][i - 1][j] + g
            n = t + 1  # tokens whose gradients are in
            for bi in range(len(blocks)):
                for i, C in enumerate(c.chunk_sizes):
                    if n % C == 0:  # Eq. 71
                        W[bi][i] = [w - lrs[bi][i] * g for w, g in zip(W[bi][i], G[bi][i])]
                        G[bi][i] = [torch.zeros_like(g) for g in G[bi][i]]
                if nested:  # Eq. 72: level i−1's chunk ends, level i restarts from its learned init
                    for i in range(1, c.levels):
                        if n % c.chunk_sizes[i - 1] == 0:
                            INIT[bi][i - 1] = [w - lrs[bi][i - 1] * g for w, g in zip(INIT[bi][i - 1], IG[bi][i - 1])]
                            IG[bi][i - 1] = [torch.zeros_like(g) for g in IG[bi][i - 1]]
                            W[bi][i] = list(INIT[bi][i - 1])
                            G[bi][i] = [torch.zeros_like(g) for g in G[bi][i]]
    return torch.cat(logits_all, dim=1), W
