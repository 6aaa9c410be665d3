"""The memory's arithmetic on the general path: the MLP, its associative
gradient written out by hand, and the chunk's momentum/forgetting coefficients.

Every configuration can run on these (token gates, no momentum, partial chunks,
the write-only path); the default path (chunk gates with momentum, whole
chunks) runs the same equations fused in ``fused.py`` / ``chunk_loop.py``.
``naive.py`` holds the float64 reference the tests compare both against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.neural.memory.config import NeuralMemoryConfig

# ---------------------------------------------------------------------------
# The memory MLP and its associative loss, written out by hand
# ---------------------------------------------------------------------------
#
# Weights of one batch of memories are a list of tensors W_l ∈ [N, in_l, out_l]
# (N = batch · heads). Row-vector convention: h_l = σ(h_{l−1} W_l) for hidden
# layers, M(x) = h_{L−1} W_L. σ = SiLU, as in the paper's projections.


def memory_mlp(weights: list[Tensor], x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Retrieval y = M(x) for x ∈ [N, n, d].

    Also returns what the hand-written backward pass needs: each layer's input
    and each hidden layer's pre-activation z.
    """
    inputs, pre = [], []
    h = x
    for layer, w in enumerate(weights):
        inputs.append(h)
        h = torch.bmm(h, w)
        if layer < len(weights) - 1:
            pre.append(h)
            h = F.silu(h)
    return h, inputs, pre


class _SiluBackward(torch.autograd.Function):
    """g · SiLU'(z) as one fused op, differentiable once more (for the outer loop).

    SiLU'(z) = σ(1 + z(1 − σ)),  SiLU''(z) = σ(1 − σ)(2 + z(1 − 2σ)),  σ = sigmoid(z).
    """

    @staticmethod
    def forward(ctx, g: Tensor, z: Tensor) -> Tensor:
        ctx.save_for_backward(g, z)
        return torch.ops.aten.silu_backward(g, z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g, z = ctx.saved_tensors
        grad_g = torch.ops.aten.silu_backward(grad, z) if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(z)
            second = s * (1 - s) * torch.addcmul(torch.full_like(z, 2.0), z, 1 - 2 * s)
            grad_z = grad * g * second
        return grad_g, grad_z


def associative_backward(
    weights: list[Tensor], inputs: list[Tensor], pre: list[Tensor], dout: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """Per-token gradients of the associative loss ℓ(M; k, v) = ‖M(k) − v‖², factored.

    ``dout`` = ∂ℓ/∂M(k) = 2 (M(k) − v) per token, possibly already scaled by a
    per-token weight c_i (the gradient is linear in it, so scaling commutes with
    backpropagation). Backpropagated through the MLP by hand, the gradient of
    layer l for token i is the outer product x_{l,i}ᵀ δ_{l,i}; we return the
    factors (x_l, δ_l) ∈ ([N, b, in], [N, b, out]) for all b tokens at once, so
    Σ_i c_i ∇ℓ_i is one matmul per layer, x_lᵀ δ_l.
    """
    delta = dout
    factors: list[tuple[Tensor, Tensor]] = [None] * len(weights)  # type: ignore[list-item]
    for layer in range(len(weights) - 1, -1, -1):
        factors[layer] = (inputs[layer], delta)
        if layer > 0:
            delta = _SiluBackward.apply(torch.bmm(delta, weights[layer].transpose(1, 2)), pre[layer - 1])
    return factors


# ---------------------------------------------------------------------------
# The scan: momentum and forgetting folded into per-chunk coefficients
# ---------------------------------------------------------------------------
#
# For one chunk with chunk-start weights M₀, momentum S₀ and token gradients
# u_i = ∇ℓ(M₀; k_i, v_i), the recurrences (surprise with momentum, forgetting)
# give in closed form
#
#     M_end = a · M₀ + κ · S₀ − Σ_i c_i u_i
#     S_end = h · S₀      − Σ_i e_i u_i
#
# token gates:  a = Π_j (1−α_j),  h = Π_j η_j,  κ = Σ_t A_t H_t,
#               c_i = θ_i Σ_{t≥i} A_t Π_{i<j≤t} η_j,   e_i = θ_i Π_{j>i} η_j,
#               with A_t = Π_{j>t} (1−α_j) and H_t = Π_{j≤t} η_j;
# chunk gates:  a = 1−α, κ = h = η, c_i = e_i = θ_i.
#
# Products are taken as exp of sums of log-gates over a lower-triangular mask
# (the "segment sum"), which never divides by a tiny product.


def _segsum(log_g: Tensor) -> Tensor:
    """out[..., t, i] = Σ_{i<j≤t} log_g[..., j] for t ≥ i, −inf above the diagonal."""
    b = log_g.shape[-1]
    x = log_g.unsqueeze(-1).expand(*log_g.shape, b)  # x[..., j, i] = log_g[j]
    idx = torch.arange(b, device=log_g.device)  # (masks by comparison: torch.tril is
    row, col = idx[:, None], idx[None, :]  # slow on tiny tensors on a busy CPU)
    x = x.masked_fill(row <= col, 0.0)  # keep j > i
    out = torch.cumsum(x, dim=-2)
    return out.masked_fill(row < col, float("-inf"))


@dataclass
class ChunkCoefficients:
    a: Tensor  # [N, n]     decay of M₀
    kappa: Tensor  # [N, n] weight of S₀ in M_end
    h: Tensor  # [N, n]     decay of S₀
    c: Tensor  # [N, n, b]  weights of u_i in M_end
    e: Tensor | None  # [N, n, b] weights of u_i in S_end (None: same as c, or no momentum)


def gram_bound(keys: Tensor) -> Tensor:
    """G_n = max(1, max_i Σ_j |k_i · k_j|) over each chunk's keys [..., b, d] → [...].

    The Gershgorin bound on the largest eigenvalue of the chunk's Gram matrix
    K Kᵀ (which shares its non-zero eigenvalues with Kᵀ K, the curvature of the
    summed associative loss of a linear memory): λ_max ≤ max row abs-sum. For
    unit keys it lies between 1 (orthogonal keys) and b (one key repeated); the
    floor of 1 only matters for keys shorter than unit length (e.g. zero padding).
    """
    gram = torch.matmul(keys, keys.transpose(-1, -2))
    return gram.abs().sum(-1).amax(-1).clamp_min(1.0)


def chunk_coefficients(
    gate_logits: Tensor, config: NeuralMemoryConfig, keys: Tensor | None = None
) -> ChunkCoefficients:
    """Coefficients for ``n`` complete chunks from gate logits [N, n, b, 3] (θ, α, η)
    and, for the "bounded" rule, the chunks' keys [N, n, b, d].

    ``update="paper"``: θ_t = max_lr · σ(·) and the surprise recurrence as written,
    S_t = η_t S_{t−1} − θ_t ∇ℓ_t (paper eq. 10; chunk gates: eqs. 13-14 per chunk).

    ``update="bounded"`` (the default) changes two things, both within the paper's
    family (θ_t stays a data-dependent step size of the same recurrence):

    1. momentum as an average (an exponential moving average of the steps):
       S_t = η_t S_{t−1} + (1 − η_t) · (−θ̃_t ∇ℓ_t), i.e. the paper's recurrence
       with θ_t ← (1 − η_t) θ̃_t. A constant gradient then moves M by θ̃ ∇ℓ per
       step, not by θ̃ ∇ℓ / (1 − η): momentum smooths the step, it no longer
       amplifies it (up to 10× at η = 0.9, unbounded as η → 1).
    2. the chunk's step divided by its keys' Gram bound (``gram_bound``):
       θ̃_t = max_lr · σ(·) / G_n. Inside a chunk all b gradients are taken at
       the chunk-start weights; for a linear memory their sum moves M by
       I − 2 Σ_t θ̃_t k_tᵀk_t, whose eigenvalues lie in [1 − 2 max_lr, 1] once
       divided by G_n: with max_lr ≤ 0.5 the summed stale step is contractive
       whatever the chunk size and however alike the keys.

    With b = 1 and unit keys, G = 1: only the averaging remains.
    """
    theta = config.max_lr * torch.sigmoid(gate_logits[..., 0])  # θ_t ∈ (0, max_lr)
    bounded = config.update == "bounded"
    if bounded:
        if keys is None:
            raise ValueError("the bounded update needs the chunks' keys")
        theta = theta / gram_bound(keys).unsqueeze(-1)  # θ̃_t = max_lr σ(·) / G_n
    if config.gates == "chunk":
        mean = gate_logits[..., 1:].mean(dim=-2)  # one α, η per chunk
        keep = torch.sigmoid(-mean[..., 0])  # 1 − α
        eta = config.max_momentum * torch.sigmoid(mean[..., 1]) if config.momentum else torch.zeros_like(keep)
        if bounded and config.momentum:
            theta = theta * (1 - eta).unsqueeze(-1)  # S_n = η S_{n−1} + (1 − η)(−Σ θ̃_t ∇ℓ_t)
        return ChunkCoefficients(a=keep, kappa=eta, h=eta, c=theta, e=None)

    # log σ(x) = −softplus(−x); (F.logsigmoid is slow on tiny tensors on a busy CPU)
    log_keep = -F.softplus(gate_logits[..., 1])  # log(1 − α_t)
    b = log_keep.shape[-1]
    # A_t = Π_{j>t} (1 − α_j): an exclusive suffix sum of the log-gates
    after = F.pad(log_keep[..., 1:], (0, 1))  # log(1 − α_{t+1}), 0 past the end
    log_A = torch.flip(torch.cumsum(torch.flip(after, [-1]), -1), [-1])
    a = torch.exp(log_keep.sum(-1))
    if not config.momentum:  # η ≡ 0: S_t = −θ_t u_t, so M_end = a M₀ − Σ θ_i A_i u_i
        zero = torch.zeros_like(a)
        return ChunkCoefficients(a=a, kappa=zero, h=zero, c=theta * torch.exp(log_A), e=None)
    log_eta = math.log(config.max_momentum) - F.softplus(-gate_logits[..., 2])  # log η_t
    if bounded:  # S_t = η_t S_{t−1} + (1 − η_t)(−θ̃_t ∇ℓ_t): θ_t = (1 − η_t) θ̃_t
        theta = theta * (1 - torch.exp(log_eta))
    L = torch.exp(_segsum(log_eta))  # L[t, i] = Π_{i<j≤t} η_j, zero above diagonal
    A = torch.exp(log_A)
    H = torch.exp(torch.cumsum(log_eta, -1))
    c = theta * torch.einsum("...t,...ti->...i", A, L)
    e = theta * L[..., b - 1, :]
    return ChunkCoefficients(a=a, kappa=(A * H).sum(-1), h=H[..., -1], c=c, e=e)


def apply_chunk(
    W: list[Tensor], S: list[Tensor], factors: list[tuple[Tensor, Tensor]],
    coef: ChunkCoefficients, n: int, use_momentum: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """One chunk of forgetting + surprise with momentum, per layer:

        M_end = a · M₀ + κ · S₀ − x_lᵀ (c ⊙ δ_l)
        S_end = h · S₀      − x_lᵀ (e ⊙ δ_l)

    written with fused multiply-adds (baddbmm/addcmul) so each weight-sized
    tensor is touched as few times as possible. ``coef`` holds per-chunk
    sequences here (unbound along the chunk axis); ``e is None`` means a single
    weighting (chunk gates, or no momentum), already folded into δ by the
    caller; otherwise δ is unweighted and c, e are applied here.
    """
    a, kappa, h = (t[n][:, None, None] for t in (coef.a, coef.kappa, coef.h))
    newW, newS = [], []
    for w, s, (x, delta) in zip(W, S, factors):
        xt = x.transpose(1, 2)
        if not use_momentum:  # S_t = −θ_t ∇ℓ: M_end = a M₀ − Σ c_i u_i  (δ carries c)
            newW.append(torch.baddbmm(a * w, xt, delta, alpha=-1))
            newS.append(s)
        elif coef.e is None:  # chunk gates: S_end = η S₀ − Σ θ_i u_i, M_end = (1−α) M₀ + S_end
            s_end = torch.baddbmm(h * s, xt, delta, alpha=-1)  # (δ carries θ)
            newS.append(s_end)
            newW.append(torch.addcmul(s_end, a, w))
        else:  # token gates: two weightings of the same per-token gradients
            c, e = coef.c[n][:, :, None], coef.e[n][:, :, None]
            newW.append(torch.baddbmm(torch.addcmul(a * w, kappa, s), xt, c * delta, alpha=-1))
            newS.append(torch.baddbmm(h * s, xt, e * delta, alpha=-1))
    return newW, newS
