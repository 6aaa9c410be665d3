"""Titans neural long-term memory (Behrouz, Zhong, Mirrokni, arXiv 2501.00663, §3).

Read this file top to bottom like the paper's appendix. The memory is a small
MLP ``M`` per head whose *weights are the state*. At test time it learns,
chunk by chunk, to map keys to values:

    associative loss      ℓ(M; k, v) = ‖M(k) − v‖²
    surprise (momentum)   S_t = η_t · S_{t−1} − θ_t · ∇ℓ(M_{t−1}; k_t, v_t)
    forgetting            M_t = (1 − α_t) · M_{t−1} + S_t
    retrieval             y_t = M*(q_t)          (a forward pass, no update)

with θ_t (learning rate, "how much to store"), η_t (momentum, "how long
surprise lasts") and α_t (forgetting) produced from the input by learned
linear maps and squashed into their valid ranges.

Chunked form (paper §3.2, "parallelizing the long-term memory training").
The sequence is cut into chunks of ``b = chunk_size`` tokens (counted from the
first token the state ever saw). Inside a chunk every gradient is taken at the
*chunk-start* weights M₀, so all b gradients are one batched backward pass
through the MLP, written out by hand as matmuls (``associative_backward``).
Momentum and forgetting then combine the b gradients with scalar coefficients
(``chunk_coefficients``: the scan), so the weights only need to exist at chunk
boundaries. ``b = 1`` is exactly the token recurrence above.

Which weights each position reads (chunk-causal): every position of chunk n
reads the weights after chunks 0 … n−1 were written, i.e. the chunk-start
weights. With ``b = 1`` position t reads M_{t−1}. ``forward`` is, by definition,
``for each chunk: y = retrieve(chunk); state = update(chunk)``; a call may end
mid-chunk, and the tokens of an incomplete chunk are kept in the state and
written when the chunk completes, so split calls equal one long call.

Two settings of the gates (``NeuralMemoryConfig.gates``):
- ``"token"``: α_t, η_t per token; within a chunk the recurrences above run
  token by token (with gradients at M₀), folded into closed-form coefficients.
- ``"chunk"`` (default, the semantics of titans-pytorch): α, η per chunk (from
  the chunk's mean gate logits) and the chunk is one step of the recurrence,
  S_n = η_n S_{n−1} − Σ_{t∈n} θ_t ∇ℓ(M_{n−1}; k_t, v_t), M_n = (1 − α_n) M_{n−1} + S_n.
θ_t is per token in both: it weighs how much each token is stored.

Outer-loop training: the gradient of a loss on ``y`` flows through the inner
updates into the projections, the gate maps, the convolutions and the initial
memory weights. Most of the way it is autograd; on the default path (chunk
gates with momentum) the run of chunks and the elementwise passes around the
projections have their outer backward written out by hand, for speed on CPUs
(``_ChunkLoop``, ``_ConvSiluNorm``, ``_GatedHeadNorm``, ``_RMSNorm``). On a
CPU the run of chunks goes to a compiled loop (``native.py``,
``csrc/chunk_loop.cpp``: the same equations, one memory per thread, built on
first use; eager PyTorch where it cannot be built). The tests hold every path
to float64 autograd through ``naive.py`` and to finite differences.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError, StateError, ValidationError
from lifelong.neural import native
from lifelong.neural.state import MemoryState

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def stable_max_lr(chunk_size: int, gates: str = "chunk") -> float:
    """The default bound on θ: small enough that the inner loop stays finite.

    A chunk's write sums b token gradients taken at the chunk-start weights, so
    the step on the chunk is ~b·θ, and with token gates the within-chunk momentum
    applies each of those stale gradients up to 1/(1−η) times more. Streaming
    8k tokens of RMS-1 and RMS-3 input through untrained memories (head width
    8–64, depth 2–3, chunks 1–64), the bare MLP stayed finite at
    θ_max = min(0.02, 0.1/b) with chunk gates and min(0.02, 0.03/b) with token
    gates, and overflowed at about 3× those bounds. Larger θ memorizes faster
    and is fine for short or well-conditioned streams: set ``max_lr`` explicitly.
    """
    return min(0.02, (0.1 if gates == "chunk" else 0.03) / max(1, chunk_size))


@dataclass
class NeuralMemoryConfig:
    dim: int = 256  # model width of the input/output stream
    heads: int = 4  # independent memories, one MLP each
    head_dim: int = 64  # key/value/query width per head
    depth: int = 2  # layers of the memory MLP; 1 = a linear matrix memory
    expansion: float = 4.0  # hidden width of the memory MLP = expansion · head_dim
    chunk_size: int = 64  # b: tokens per write; 1 = exact token recurrence
    conv_kernel: int = 4  # causal depthwise conv after q/k/v projections; 1 = none
    gates: str = "chunk"  # "chunk" or "token": granularity of α and η (θ is per token)
    momentum: bool = True  # False: S_t = −θ_t ∇ℓ (plain gradient step, η ≡ 0)
    max_lr: float | None = None  # θ_t ∈ (0, max_lr); None: stable_max_lr(chunk_size, gates)
    init_lr_logit: float = 0.0  # initial θ = max_lr · sigmoid(·)
    init_forget_logit: float = -4.6  # initial α ≈ 0.01
    init_momentum_logit: float = 2.2  # initial η = max_momentum · sigmoid(·) ≈ 0.9 · max_momentum
    max_momentum: float = 1.0  # η_t ∈ (0, max_momentum)

    def __post_init__(self) -> None:
        for name in ("dim", "heads", "head_dim", "depth", "chunk_size", "conv_kernel"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"NeuralMemoryConfig.{name} must be ≥ 1, got {getattr(self, name)}",
                    hint=f"set {name} to a positive integer",
                )
        if self.gates not in ("chunk", "token"):
            raise ConfigError(
                f"NeuralMemoryConfig.gates must be 'chunk' or 'token', got {self.gates!r}",
                hint="use gates='chunk' (α, η per chunk) or gates='token' (per token)",
            )
        if self.max_lr is None:
            self.max_lr = stable_max_lr(int(self.chunk_size), self.gates)
        if not 0.0 < self.max_momentum <= 1.0:
            raise ConfigError(
                f"NeuralMemoryConfig.max_momentum must be in (0, 1], got {self.max_momentum}",
                hint="η_t ∈ (0, max_momentum); 1.0 is the paper's range",
            )
        if self.expansion <= 0 or self.max_lr <= 0:
            raise ConfigError(
                "NeuralMemoryConfig.expansion and max_lr must be positive",
                hint="e.g. expansion=4.0; leave max_lr unset for the stable default",
            )

    @property
    def hidden_dim(self) -> int:
        return max(1, int(round(self.expansion * self.head_dim)))

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each memory layer: d → h → … → h → d (depth 1: d → d)."""
        if self.depth == 1:
            return [(self.head_dim, self.head_dim)]
        dims = [self.head_dim] + [self.hidden_dim] * (self.depth - 1) + [self.head_dim]
        return list(zip(dims[:-1], dims[1:]))

    def fingerprint(self) -> str:
        """Short hash of the fields that decide a state's layout and meaning."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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


def chunk_coefficients(gate_logits: Tensor, config: NeuralMemoryConfig) -> ChunkCoefficients:
    """Coefficients for ``n`` complete chunks from gate logits [N, n, b, 3] (θ, α, η)."""
    theta = config.max_lr * torch.sigmoid(gate_logits[..., 0])  # θ_t ∈ (0, max_lr)
    if config.gates == "chunk":
        mean = gate_logits[..., 1:].mean(dim=-2)  # one α, η per chunk
        keep = torch.sigmoid(-mean[..., 0])  # 1 − α
        eta = config.max_momentum * torch.sigmoid(mean[..., 1]) if config.momentum else torch.zeros_like(keep)
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
    L = torch.exp(_segsum(log_eta))  # L[t, i] = Π_{i<j≤t} η_j, zero above diagonal
    A = torch.exp(log_A)
    H = torch.exp(torch.cumsum(log_eta, -1))
    c = theta * torch.einsum("...t,...ti->...i", A, L)
    e = theta * L[..., b - 1, :]
    return ChunkCoefficients(a=a, kappa=(A * H).sum(-1), h=H[..., -1], c=c, e=e)


def _apply_chunk(
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


# ---------------------------------------------------------------------------
# Chunks of read + write with a hand-written outer backward (the default path)
# ---------------------------------------------------------------------------


def _silu_grads(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """SiLU'(z) and SiLU''(z), given h = SiLU(z) = z σ(z):

        SiLU'  = σ + z u,  SiLU'' = u (2 + z − 2h),  u = σ'(z) = σ − σ²
    """
    s = torch.sigmoid(z)
    u = torch.addcmul(s, s, s, value=-1)
    first = torch.addcmul(s, z, u)
    second = torch.add(z, h, alpha=-2).add_(2).mul_(u)
    return first, second


def _chunk_forward(
    q: Tensor, k: Tensor, v: Tensor, two_theta: Tensor, keep: Tensor, eta: Tensor,
    W: list[Tensor], S: list[Tensor],
) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Read a chunk's queries and write its keys, for chunk gates with momentum:

        Y = M(Q);  Δ_L = (M(K) − V) ⊙ 2θ,  Δ_{l−1} = (Δ_l W_lᵀ) ⊙ σ'(Z_{l−1});
        G_l = H_{l−1}ᵀ Δ_l;  S'_l = η S_l − G_l;  W'_l = (1 − α) W_l + S'_l

    — the same arithmetic as ``memory_mlp`` + ``associative_backward`` +
    ``_apply_chunk`` (which remain the path for token gates, no momentum and
    partial chunks). Q, K, V [N, b, d], two_theta [N, b, 1], keep = 1 − α and
    eta [N]. Returns Y, the new weights and momenta, and what ``_chunk_backward``
    needs.
    """
    L, b = len(W), q.shape[1]
    x0 = torch.cat([q, k], dim=1)
    hs, zs = [x0], []  # layer inputs H_{l−1} ([Q;K]) and hidden pre-activations
    h = x0
    for layer, w in enumerate(W):
        z = torch.bmm(h, w)
        if layer < L - 1:
            zs.append(z)
            h = F.silu(z)
            hs.append(h)
        else:
            out = z
    y, out_k = out.split(b, dim=1)
    err = out_k - v  # M(K) − V
    deltas: list[Tensor] = [None] * L  # type: ignore[list-item]
    ps: list[Tensor] = [None] * L  # type: ignore[list-item]  P_l = Δ_l W_lᵀ
    delta = err * two_theta
    for layer in range(L - 1, -1, -1):
        deltas[layer] = delta
        if layer > 0:
            ps[layer] = torch.bmm(delta, W[layer].transpose(1, 2))
            delta = torch.ops.aten.silu_backward(ps[layer], zs[layer - 1][:, b:])
    keep3, eta3 = keep[:, None, None], eta[:, None, None]
    new_w, new_s = [], []
    for layer in range(L):
        s_end = torch.baddbmm(eta3 * S[layer], hs[layer][:, b:].transpose(1, 2), deltas[layer], alpha=-1)
        new_s.append(s_end)
        new_w.append(torch.addcmul(s_end, keep3, W[layer]))
    saved = [two_theta, keep, eta, err, *W, *S, *hs, *zs, *deltas, *ps[1:]]
    return y, new_w, new_s, saved


def _chunk_backward(
    saved: list[Tensor], L: int, b: int, g_y: Tensor | None,
    g_w_new: list[Tensor | None], g_s_new: list[Tensor | None],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, list[Tensor], list[Tensor]]:
    """The outer backward of ``_chunk_forward``, written out by hand: it
    differentiates through the inner gradient (second-order terms via σ'').
    Returns the gradients of Q, K, V, two_theta, keep, eta, the chunk-start
    weights and momenta."""
    two_theta, keep, eta, err = saved[:4]
    rest = saved[4:]
    W, S = rest[:L], rest[L : 2 * L]
    hs = rest[2 * L : 3 * L]  # H_0 = [Q;K], H_l for l < L
    zs = rest[3 * L : 4 * L - 1]
    deltas = rest[4 * L - 1 : 5 * L - 1]
    ps = [None, *rest[5 * L - 1 :]]
    keep3, eta3 = keep[:, None, None], eta[:, None, None]

    def dot(a: Tensor, c: Tensor) -> Tensor:  # ⟨a_n, c_n⟩ for each memory n
        return torch.linalg.vecdot(a.flatten(1), c.flatten(1))

    # W'_l = (1 − α) W_l + S'_l,  S'_l = η S_l − G_l
    g_W, g_S, R = [], [], []  # R_l = dℒ/dS'_l = −dℒ/dG_l
    g_keep = g_eta = None
    for layer in range(L):
        gw, gs = g_w_new[layer], g_s_new[layer]
        gw = torch.zeros_like(W[layer]) if gw is None else gw
        r = gw if gs is None else gw + gs
        g_W.append(keep3 * gw)
        g_S.append(eta3 * r)
        dk, de = dot(gw, W[layer]), dot(r, S[layer])
        g_keep = dk if g_keep is None else g_keep + dk
        g_eta = de if g_eta is None else g_eta + de
        R.append(r)

    # G_l = H_{l−1}ᵀ Δ_l over the key rows. Signs folded: N_l = H_{l−1} R_l = −dℒ/dΔ_l;
    # the key rows of H_{l−1} get −Δ_l R_lᵀ (added below, in the MLP's backward)
    N = [torch.bmm(hs[layer][:, b:], R[layer]) for layer in range(L)]
    # Δ_{l−1} = P_l ⊙ σ'(Z_{l−1}), P_l = Δ_l W_lᵀ: walk l = 1 … L−1 upwards
    neg_z_extra: list[Tensor | None] = [None] * L  # −(σ'' terms) for Z_{l−1}'s key rows
    for layer in range(1, L):
        first, second = _silu_grads(zs[layer - 1][:, b:], hs[layer][:, b:])
        neg_p = N[layer - 1] * first  # −dℒ/dP_l
        neg_z_extra[layer - 1] = (N[layer - 1] * ps[layer]).mul_(second)
        N[layer].baddbmm_(neg_p, W[layer])
        g_W[layer].baddbmm_(neg_p.transpose(1, 2), deltas[layer], alpha=-1)
    # Δ_L = (M(K) − V) ⊙ 2θ
    g_v = N[L - 1] * two_theta
    g_two_theta = -torch.linalg.vecdot(N[L - 1], err).unsqueeze(-1)
    # forward MLP over [Q;K], from the top: dℒ/dZ_L = [g_y ; −g_v]
    g_z = g_v.new_empty(g_v.shape[0], 2 * b, g_v.shape[2])
    if g_y is None:
        g_z[:, :b].zero_()
    else:
        g_z[:, :b].copy_(g_y)
    torch.neg(g_v, out=g_z[:, b:])
    for layer in range(L - 1, -1, -1):
        g_W[layer].baddbmm_(hs[layer].transpose(1, 2), g_z)
        g_h = torch.bmm(g_z, W[layer].transpose(1, 2))
        g_h[:, b:].sub_(torch.bmm(deltas[layer], R[layer].transpose(1, 2)))
        if layer > 0:
            g_z = torch.ops.aten.silu_backward(g_h, zs[layer - 1])
            g_z[:, b:].sub_(neg_z_extra[layer - 1])
    g_q, g_k = g_h.split(b, dim=1)
    return g_q, g_k, g_v, g_two_theta, g_keep, g_eta, g_W, g_S  # type: ignore[return-value]


class _ChunkLoop(torch.autograd.Function):
    """``n`` consecutive whole chunks of read + write (chunk gates with momentum)
    as one autograd node: the forward runs ``_chunk_forward`` chunk by chunk, the
    backward runs ``_chunk_backward`` from the last chunk to the first, carrying
    the gradients of the weights and momenta between them and writing the
    gradients of Q, K, V and the gates straight into whole-sequence tensors.

    Inputs: ``save`` (keep what the backward needs), Q, K, V [N, n·b, d],
    two_theta [N, n, b, 1], keep = 1 − α and eta [N, n], then the L chunk-start
    weights and the L momenta. Outputs: Y [N, n·b, d], the L final weights, the
    L final momenta. On the CPU the same arithmetic runs in the native loop of
    ``native.py`` (``csrc/chunk_loop.cpp``) where it can be built. Both are
    checked against the float64 naive reference and finite differences in the
    tests.
    """

    @staticmethod
    def forward(ctx, save, q, k, v, two_theta, keep, eta, *tensors):  # type: ignore[override]
        # The inner loop runs in the dtype of the memory's weights, autocast or not
        # (under bf16 autocast the projections hand in bf16 q, k, v).
        with torch.autocast(q.device.type, enabled=False):
            dtype = tensors[0].dtype
            q, k, v, two_theta, keep, eta = (t.to(dtype) for t in (q, k, v, two_theta, keep, eta))
            L = len(tensors) // 2
            W, S = list(tensors[:L]), list(tensors[L:])
            n, b = keep.shape[1], two_theta.shape[2]
            ctx.L, ctx.b, ctx.n, ctx.device_type = L, b, n, q.device.type
            ext = native.load() if q.device.type == "cpu" and dtype in (torch.float32, torch.float64) else None
            ctx.native = ext
            if ext is not None:  # the same arithmetic, one memory per thread (native.py)
                q, k, v, keep, eta = (t.contiguous() for t in (q, k, v, keep, eta))
                two_theta = two_theta.reshape(two_theta.shape[:3]).contiguous()
                out = ext.forward(q, k, v, two_theta, keep, eta,
                                  [w.contiguous() for w in W], [s.contiguous() for s in S], save)
                if save:
                    ctx.save_for_backward(q, k, two_theta, keep, eta, *out[1 + 2 * L :])
                return tuple(out[: 1 + 2 * L])
            y = q.new_empty(q.shape[0], n * b, W[-1].shape[-1])
            saved: list[Tensor] = []
            for i in range(n):
                rows = slice(i * b, (i + 1) * b)
                y_i, W, S, saved_i = _chunk_forward(
                    q[:, rows], k[:, rows], v[:, rows], two_theta[:, i], keep[:, i], eta[:, i], W, S
                )
                y[:, rows] = y_i
                if save:
                    saved.extend(saved_i)
            ctx.save_for_backward(*saved)
            return (y, *W, *S)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_y, *grads):  # type: ignore[override]
        with torch.autocast(ctx.device_type, enabled=False):
            L, b, n = ctx.L, ctx.b, ctx.n
            saved = ctx.saved_tensors
            if ctx.native is not None:
                q, k, two_theta, keep, eta, *rest = saved
                g = ctx.native.backward(q, k, two_theta, keep, eta, rest, g_y, list(grads[:L]), list(grads[L:]))
                g[3] = g[3].unsqueeze(-1)  # two_theta [N, n, b, 1]
                return (None, *g)
            per = len(saved) // n
            ref = saved[4]  # a weight: dtype, device, batch
            g_y = None if g_y is None else g_y.to(ref.dtype)
            g_w = [None if g is None else g.to(ref.dtype) for g in grads[:L]]
            g_s = [None if g is None else g.to(ref.dtype) for g in grads[L:]]
            N, d = ref.shape[0], saved[3].shape[-1]
            g_q, g_k, g_v = (ref.new_empty(N, n * b, d) for _ in range(3))
            g_two_theta = ref.new_empty(N, n, b, 1)
            g_keep, g_eta = ref.new_empty(N, n), ref.new_empty(N, n)
            for i in range(n - 1, -1, -1):
                rows = slice(i * b, (i + 1) * b)
                gq, gk, gv, g_two_theta[:, i], g_keep[:, i], g_eta[:, i], g_w, g_s = _chunk_backward(
                    list(saved[i * per : (i + 1) * per]), L, b,
                    None if g_y is None else g_y[:, rows], g_w, g_s,
                )
                g_q[:, rows], g_k[:, rows], g_v[:, rows] = gq, gk, gv
            return (None, g_q, g_k, g_v, g_two_theta, g_keep, g_eta, *g_w, *g_s)


# ---------------------------------------------------------------------------
# Around the memory: the projections' convolution, SiLU and ℓ2 norm; the
# input and output norms
# ---------------------------------------------------------------------------
#
# Written by hand, forward and backward, because on a CPU these passes over
# activation-sized tensors cost as much as the matmuls: every step works on
# contiguous rows of one sequence at a time and writes straight into its
# destination layout, so nothing is copied to reorder it.


def _conv_forward(cache: Tensor, x: Tensor, taps: Tensor, out: Tensor) -> None:
    """Depthwise causal convolution over time for one sequence, into ``out``:

        out[t] = Σ_j taps[j] ⊙ x[t − (K−1−j)]

    for the new inputs x ∈ [T, C], reading the K − 1 cached inputs of the state
    (``cache`` ∈ [K − 1, C]) before the first of them; taps ∈ [K, C] (each tap's
    weights one contiguous row: a strided broadcast operand keeps the CPU
    kernels from vectorizing)."""
    K, T = taps.shape[0], x.shape[0]
    torch.mul(x, taps[K - 1], out=out)
    for j in range(K - 1):
        s, m = K - 1 - j, min(K - 1 - j, T)  # lookback; outputs that reach the cache
        if T > s:
            out[s:].addcmul_(x[: T - s], taps[j])
        if m:
            out[:m].addcmul_(cache[j : j + m], taps[j])


def _conv_backward(
    cache: Tensor, x: Tensor, taps: Tensor, g: Tensor,
    grad_cache: Tensor | None, grad_x: Tensor | None, grad_taps: Tensor | None,
) -> None:
    """Gradients of ``_conv_forward`` for one sequence from g = ∂ℒ/∂out: written
    into grad_cache and grad_x, accumulated into grad_taps (those not None).

    The input gradient accumulates K shifted products in one buffer; a tap's
    weight gradient Σ_t x[t − s] ⊙ g[t] is a dot product along time."""
    K, T = taps.shape[0], x.shape[0]
    if grad_cache is not None:
        grad_cache.zero_()
    if grad_x is not None:
        torch.mul(g, taps[K - 1], out=grad_x)
    for j in range(K):
        s, m = K - 1 - j, min(K - 1 - j, T)
        if grad_x is not None and j < K - 1 and T > s:
            grad_x[: T - s].addcmul_(g[s:], taps[j])
        if grad_cache is not None and m:
            grad_cache[j : j + m].addcmul_(g[:m], taps[j])
        if grad_taps is not None:
            if T > s:
                grad_taps[j] += torch.linalg.vecdot(x[: T - s], g[s:], dim=0)
            if m:
                grad_taps[j] += torch.linalg.vecdot(cache[j : j + m], g[:m], dim=0)


class _ConvSiluNorm(torch.autograd.Function):
    """raw = x W_qkv ∈ [B, T, 3·H·d] → q, k, v ∈ [B, H, T, d]:

        a = SiLU(conv(raw)),  q = a_q / ‖a_q‖,  k = a_k / ‖a_k‖,  v = a_v

    per head, with the convolution continued from the state's cache. Forward
    and backward run one sequence at a time, all steps on it back to back while
    it is still in the CPU's cache; SiLU writes each third straight into its
    head-major tensor and the ℓ2 norms work in place there. Backward:
    (g − y ⟨g, y⟩) / ‖a‖ for q and k, SiLU' back into the [T, 3·H·d] layout (one
    reused buffer), then the convolution's gradients.
    """

    @staticmethod
    def forward(ctx, cache: Tensor, raw: Tensor, w: Tensor, heads: int):  # type: ignore[override]
        B, T, C = raw.shape
        d = C // (3 * heads)
        dtype = torch.promote_types(raw.dtype, w.dtype)  # (bf16 projections under autocast)
        raw, cache = raw.to(dtype), cache.to(dtype)
        taps = w.t().to(dtype).contiguous()  # [K, C]
        mixed = raw.new_empty(B, T, C)
        outs = [raw.new_empty(B, heads, T, d) for _ in range(3)]
        norms = [raw.new_empty(B, heads, T, 1) for _ in range(2)]
        for i in range(B):
            _conv_forward(cache[i], raw[i], taps, mixed[i])
            parts = mixed[i].view(T, 3, heads, d)
            for c in range(3):
                out = outs[c][i]  # [H, T, d]
                torch.ops.aten.silu.out(parts[:, c], out=out.transpose(0, 1))
                if c < 2:  # q, k: ℓ2-normalized over the head's features
                    norm = norms[c][i]
                    torch.linalg.vector_norm(out, dim=-1, keepdim=True, out=norm)
                    out.div_(norm.clamp_min_(1e-12))
        ctx.save_for_backward(cache, raw, taps, mixed, outs[0], outs[1], *norms)
        ctx.heads = heads
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_q, g_k, g_v):  # type: ignore[override]
        cache, raw, taps, mixed, q, k, norm_q, norm_k = ctx.saved_tensors
        B, T, C = raw.shape
        heads = ctx.heads
        d = C // (3 * heads)
        need_cache, need_raw, need_w = ctx.needs_input_grad[:3]
        grad_cache = torch.empty_like(cache) if need_cache else None
        grad_raw = torch.empty_like(raw) if need_raw else None
        grad_taps = torch.zeros_like(taps) if need_w else None
        g_mixed = raw.new_empty(T, C)  # one sequence at a time
        g_parts = g_mixed.view(T, 3, heads, d)
        through_norm = raw.new_empty(heads, T, d)
        for i in range(B):
            parts = mixed[i].view(T, 3, heads, d)
            for c, (g, y, norm) in enumerate(((g_q, q, norm_q), (g_k, k, norm_k), (g_v, None, None))):
                if g is None:
                    g_parts[:, c].zero_()
                    continue
                g = g[i].to(raw.dtype)
                if y is not None:  # through the ℓ2 norm
                    dot = torch.linalg.vecdot(g, y[i], dim=-1).unsqueeze(-1)
                    g = torch.addcmul(g, y[i], dot, value=-1, out=through_norm).div_(norm[i])
                torch.ops.aten.silu_backward.grad_input(
                    g.transpose(0, 1), parts[:, c], grad_input=g_parts[:, c]
                )
            _conv_backward(
                cache[i], raw[i], taps, g_mixed,
                None if grad_cache is None else grad_cache[i],
                None if grad_raw is None else grad_raw[i],
                grad_taps,
            )
        grad_w = None if grad_taps is None else grad_taps.t()
        return grad_cache, grad_raw, grad_w, None


def _inv_rms(x: Tensor) -> Tensor:
    """1 / √(mean(x²) + ε) over the last axis, keeping it (size 1)."""
    return torch.rsqrt(torch.linalg.vecdot(x, x).unsqueeze(-1).div_(x.shape[-1]).add_(1e-6))


def _rms_norm_grad(g: Tensor, xn: Tensor, out: Tensor | None = None) -> Tensor:
    """g − x̂ ⟨g, x̂⟩ / D: the RMS norm's backward before its 1/rms scale."""
    dot = torch.linalg.vecdot(g, xn).unsqueeze(-1).div_(xn.shape[-1])
    return torch.addcmul(g, xn, dot, value=-1, out=out)


class _RMSNorm(torch.autograd.Function):
    """x / √(mean(x²) + ε) over the last axis, without a gain; backward
    (g − x̂ ⟨g, x̂⟩ / D) / rms in three passes."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        inv = _inv_rms(x)
        xn = x * inv
        ctx.save_for_backward(xn, inv)
        return xn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        xn, inv = ctx.saved_tensors
        return _rms_norm_grad(g, xn).mul_(inv)


class _GatedHeadNorm(torch.autograd.Function):
    """y ∈ [B, H, T, d], gate logits ∈ [B, T, H·d] → z ∈ [B, T, H·d]:

        z = RMSNorm(y) ⊙ σ(gate),  RMSNorm(y) = y / √(mean_d(y²) + ε)  per head

    (the learned per-feature gain is folded into the output projection by the
    caller). Normalizes straight into the token-major layout the projection
    reads; backward in five passes instead of autograd's dozen.
    """

    @staticmethod
    def forward(ctx, y: Tensor, gate: Tensor) -> Tensor:  # type: ignore[override]
        B, H, T, d = y.shape
        inv = _inv_rms(y)  # [B, H, T, 1]
        yn = y.new_empty(B, T, H, d)
        torch.mul(y.transpose(1, 2), inv.transpose(1, 2), out=yn)
        sg = torch.sigmoid(gate)
        z = yn.view(B, T, H * d) * sg
        ctx.save_for_backward(yn, sg, inv)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        yn, sg, inv = ctx.saved_tensors
        B, T, H, d = yn.shape
        flat = yn.view(B, T, H * d)
        g_gate = torch.ops.aten.sigmoid_backward(g * flat, sg)
        g_yn = (g * sg).view(B, T, H, d)
        _rms_norm_grad(g_yn, yn, out=g_yn)  # (then · 1/rms, below)
        g_y = yn.new_empty(B, H, T, d)
        torch.mul(g_yn.transpose(1, 2), inv, out=g_y)
        return g_y, g_gate


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------


class NeuralMemory(nn.Module):
    """Multi-head Titans long-term memory: ``forward(x, state) -> (y, state)``.

    x, y ∈ [B, T, dim]. ``retrieve`` and ``update`` are the two halves (the MAC
    variant calls them separately); ``forward`` interleaves them per chunk.
    """

    def __init__(self, config: NeuralMemoryConfig | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NeuralMemoryConfig()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        inner = cfg.heads * cfg.head_dim
        # projections: queries, keys, values in one matmul (then split)
        self.to_qkv = nn.Linear(cfg.dim, 3 * inner, bias=False)
        # short causal depthwise convolution over time after each projection
        self.conv = nn.Parameter(torch.zeros(3 * inner, cfg.conv_kernel))
        # data-dependent gates θ, α, η: one logit per head per token
        self.to_gates = nn.Linear(cfg.dim, 3 * cfg.heads)
        # initial memory weights M₀, per head, per layer (learned in the outer loop)
        self.init_weights = nn.ParameterList(
            nn.Parameter(torch.empty(cfg.heads, i, o)) for i, o in cfg.layer_shapes()
        )
        # output: per-head RMS norm, a sigmoid gate from x, a linear projection
        self.out_norm = nn.Parameter(torch.ones(cfg.heads, cfg.head_dim))
        self.to_gate = nn.Linear(cfg.dim, inner, bias=False)
        self.to_out = nn.Linear(inner, cfg.dim, bias=False)
        self._init(gen)

    @torch.no_grad()
    def _init(self, gen: torch.Generator | None) -> None:
        cfg = self.config

        def normal_(t: Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * std)

        normal_(self.to_qkv.weight, cfg.dim**-0.5)
        normal_(self.to_gate.weight, cfg.dim**-0.5)
        normal_(self.to_out.weight, (cfg.heads * cfg.head_dim) ** -0.5)
        normal_(self.to_gates.weight, 0.02 * cfg.dim**-0.5)
        self.to_gates.bias.view(3, cfg.heads).copy_(
            torch.tensor([cfg.init_lr_logit, cfg.init_forget_logit, cfg.init_momentum_logit])[:, None]
        )
        # convolution starts near identity: the current token, plus a little history
        normal_(self.conv, 0.1 / math.sqrt(cfg.conv_kernel))
        self.conv[:, -1] += 1.0
        for w in self.init_weights:
            normal_(w, w.shape[1] ** -0.5)

    # --- state ----------------------------------------------------------------

    def init_state(self, batch_size: int) -> MemoryState:
        """A fresh state: weights M₀ (the learned initial memory), zero momentum."""
        cfg, p = self.config, self.init_weights[0]
        B, H, d = batch_size, cfg.heads, cfg.head_dim
        weights = tuple(w.unsqueeze(0).expand(B, *w.shape) for w in self.init_weights)
        empty = p.new_zeros(B, H, 0, d)
        return MemoryState(
            weights=weights,
            momentum=tuple(torch.zeros_like(w) for w in weights),
            position=torch.zeros(B, dtype=torch.long, device=p.device),
            conv=p.new_zeros(B, cfg.conv_kernel - 1, 3 * H * d),
            pending_k=empty,
            pending_v=empty.clone(),
            pending_gates=p.new_zeros(B, H, 0, 3),
            fingerprint=cfg.fingerprint(),
            config=asdict(cfg),
        )

    def load_state(self, path: str | os.PathLike[str]) -> MemoryState:
        """Read a state saved by ``MemoryState.save``, checked against this config,
        on this module's device and dtype."""
        p = self.init_weights[0]
        state = MemoryState.load(path, expect_fingerprint=self.config.fingerprint())
        return state.to(device=p.device, dtype=p.dtype)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.config.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValidationError(
                f"NeuralMemory expects input [batch, tokens, {self.config.dim}], got {shape}",
                hint="reshape the input to [B, T, dim]",
            )
        if not x.is_floating_point():
            raise ValidationError(f"NeuralMemory expects a float tensor, got {x.dtype}",
                                  hint="cast the input, e.g. x.float()")
        # a sum is finite only if every term is (NaN and ±inf propagate); one read
        # pass, and the exact elementwise check only when the sum says otherwise
        if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ValidationError(
                "NeuralMemory input contains NaN or inf",
                hint="find where the non-finite values come from upstream; the memory would store them",
            )

    def _check_state(self, state: MemoryState | None, x: Tensor) -> MemoryState:
        cfg = self.config
        if state is None:
            return self.init_state(x.shape[0])
        if not isinstance(state, MemoryState):
            raise StateError(f"expected a MemoryState, got {type(state).__name__}",
                             hint="pass the state returned by a previous call, or None")
        if state.fingerprint != cfg.fingerprint():
            raise StateError(
                "this state belongs to a memory with a different configuration "
                f"({state.config or state.fingerprint})",
                hint="use the NeuralMemory that produced the state, or start with state=None",
            )
        if state.batch_size != x.shape[0]:
            raise StateError(
                f"state has batch {state.batch_size} but the input has batch {x.shape[0]}",
                hint="MemoryState.stack / .index the states to match the input batch",
            )
        for w, (i, o) in zip(state.weights, cfg.layer_shapes()):
            if tuple(w.shape[1:]) != (cfg.heads, i, o):
                raise StateError(f"state weights have shape {tuple(w.shape)}",
                                 hint="the state does not fit this memory; start with state=None")
        if state.pending != int(state.position[0]) % cfg.chunk_size or not bool(
            (state.position == state.position[0]).all()
        ):
            raise StateError(
                "state positions disagree within the batch or with its pending chunk",
                hint="batch together only states at the same position modulo chunk_size",
            )
        return state.to(device=x.device, dtype=x.dtype) if state.conv.dtype != x.dtype or \
            state.conv.device != x.device else state

    # --- projections: q, k, v, gate logits --------------------------------------

    @staticmethod
    def _norm_input(x: Tensor) -> Tensor:
        """RMS-normalize the input stream (no gain: the projections carry the scale).

        Keys and queries are ℓ2-normalized anyway; this bounds the values too, so
        the inner loop sees targets of the same size whatever the upstream scale."""
        return _RMSNorm.apply(x)

    def _project(self, x: Tensor, conv_cache: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """q, k, v ∈ [B, H, T, d] (SiLU, ℓ2-normalized q and k), gate logits [B, H, T, 3],
        all from the RMS-normalized input."""
        cfg = self.config
        B, T, _ = x.shape
        H, d, K = cfg.heads, cfg.head_dim, cfg.conv_kernel
        raw = self.to_qkv(x)  # [B, T, 3·H·d]
        # causal depthwise convolution, continued from the last K−1 inputs of the state
        if T >= K - 1:  # the state keeps the last K − 1 raw projections
            new_cache = raw[:, T - (K - 1):].clone()  # (clone: don't pin `raw`)
        else:
            new_cache = torch.cat([conv_cache[:, T:], raw], dim=1)
        q, k, v = _ConvSiluNorm.apply(conv_cache, raw, self.conv, H)
        gates = self.to_gates(x).view(B, T, 3, H).permute(0, 3, 1, 2)
        return q, k, v, gates, new_cache

    def _output(self, x: Tensor, y: Tensor) -> Tensor:
        """Normalize each head's retrieval, gate it by x, project back to dim."""
        z = _GatedHeadNorm.apply(y, self.to_gate(x))
        # the per-feature gain g of the norm, folded into the projection: (ŷ ⊙ g) Wᵀ = ŷ (W ⊙ g)ᵀ
        return F.linear(z, self.to_out.weight * self.out_norm.reshape(1, -1))

    # --- the inner loop ------------------------------------------------------------

    def _run(
        self, q: Tensor | None, k: Tensor, v: Tensor, gates: Tensor, state: MemoryState,
        new_conv: Tensor,
    ) -> tuple[Tensor | None, MemoryState]:
        """Write whole chunks of (pending ⧺ new) tokens; read q chunk-causally if given."""
        cfg = self.config
        B, H, T, d = k.shape
        N, b, P = B * H, cfg.chunk_size, state.pending
        if P:
            k = torch.cat([state.pending_k, k], dim=2)
            v = torch.cat([state.pending_v, v], dim=2)
            gates = torch.cat([state.pending_gates, gates], dim=2)
        keys, vals, logits = k.reshape(N, P + T, d), v.reshape(N, P + T, d), gates.reshape(N, P + T, 3)
        n_full = (P + T) // b
        coef = chunk_coefficients(logits[:, : n_full * b].reshape(N, n_full, b, 3), cfg)
        use_momentum = cfg.momentum

        W = [w.reshape(N, *w.shape[2:]) for w in state.weights]
        S = [s.reshape(N, *s.shape[2:]) for s in state.momentum]
        # cut the (pending ⧺ new) stream at chunk boundaries; ``split`` (not slicing)
        # keeps autograd from allocating a full-length gradient for every chunk
        bounds = [(n * b, min((n + 1) * b, P + T)) for n in range(n_full + 1)]
        sizes = [hi - lo for lo, hi in bounds]
        key_chunks, val_chunks = keys.split(sizes, dim=1), vals.split(sizes, dim=1)
        if q is not None:  # queries exist for new tokens only
            q_sizes = [max(hi - P, 0) - max(lo - P, 0) for lo, hi in bounds]
            q_flat = q.reshape(N, T, d)
            q_chunks = q_flat.split(q_sizes, dim=1)
        coef_chunks = ChunkCoefficients(*(
            t.unbind(1) if t is not None else None
            for t in (coef.a, coef.kappa, coef.h, coef.c, coef.e)
        ))
        # 2·c_i per token (single weighting) or plain 2 (token gates apply c, e later)
        scale = 2 * coef.c if coef.e is None else torch.full_like(coef.c, 2.0)
        two_c = scale.unsqueeze(-1).unbind(1)
        outs: list[Tensor] = []
        fused = q is not None and cfg.gates == "chunk" and use_momentum
        # chunked form: one sequential step per chunk, everything inside it batched
        done = 0  # chunks already written by the fused node
        for n in range(n_full + 1):
            if n < done:
                continue
            if fused and q_sizes[n] == b and n < n_full:
                # every later whole chunk reads b queries too: one node for the run
                lo, hi = n * b, n_full * b  # key rows; the query rows sit P earlier
                args = (
                    q_flat[:, lo - P : hi - P], keys[:, lo:hi], vals[:, lo:hi],
                    scale[:, n:n_full].unsqueeze(-1), coef.a[:, n:n_full], coef.h[:, n:n_full], *W, *S,
                )
                # keep what the backward needs only if there will be one
                save = torch.is_grad_enabled() and any(t.requires_grad for t in args)
                y_run, *WS = _ChunkLoop.apply(save, *args)
                outs.append(y_run)
                W, S = WS[: len(W)], WS[len(W):]
                done = n_full
                continue
            if q is not None and n < n_full and q_sizes[n] == b:
                # read and write at the same weights: one pass over [queries ⧺ keys]
                both, inputs, pre = memory_mlp(W, torch.cat([q_chunks[n], key_chunks[n]], dim=1))
                y_n, out = both.split(b, dim=1)
                outs.append(y_n)
                inputs = [t.split(b, dim=1)[1] for t in inputs]
                pre = [t.split(b, dim=1)[1] for t in pre]
            else:
                if q is not None and q_sizes[n] > 0:  # retrieval: the chunk-start weights
                    outs.append(memory_mlp(W, q_chunks[n])[0])
                if n == n_full:
                    break
                out, inputs, pre = memory_mlp(W, key_chunks[n])
            # associative loss gradient at the chunk-start weights, all b tokens at once:
            # ∂ℓ/∂M(k) = 2 (M(k) − v), pre-weighted by c when one weighting suffices
            dout = (out - val_chunks[n]) * two_c[n]
            factors = associative_backward(W, inputs, pre, dout)
            W, S = _apply_chunk(W, S, factors, coef_chunks, n, use_momentum)

        if n_full and not bool(torch.isfinite(W[-1]).all()):
            raise StateError(
                f"the memory's weights overflowed (non-finite) while writing tokens "
                f"{int(state.position[0])}–{int(state.position[0]) + T} of the stream",
                hint=f"lower max_lr (now {cfg.max_lr:g}; the default is stable_max_lr(chunk_size, "
                "gates)) or the input scale, or use a smaller chunk_size",
            )
        rest = slice(n_full * b, P + T)
        new_state = MemoryState(
            weights=tuple(w.reshape(B, H, *w.shape[1:]) for w in W),
            momentum=tuple(s.reshape(B, H, *s.shape[1:]) for s in S),
            position=state.position + T,
            conv=new_conv,
            pending_k=keys[:, rest].reshape(B, H, -1, d).clone(),  # clone: don't pin the inputs
            pending_v=vals[:, rest].reshape(B, H, -1, d).clone(),
            pending_gates=logits[:, rest].reshape(B, H, -1, 3).clone(),
            fingerprint=state.fingerprint,
            config=state.config,
        )
        y = None
        if q is not None:
            if not outs:
                y = q.new_zeros(B, H, 0, d)
            else:
                y = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)).reshape(B, H, T, d)
        return y, new_state

    # --- public API -------------------------------------------------------------------

    def forward(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        """Chunk-causal read then write: position t reads the weights written by all
        complete chunks before its own chunk. Returns y ∈ [B, T, dim] and the new state."""
        self._check_input(x)
        state = self._check_state(state, x)
        x = self._norm_input(x)
        q, k, v, gates, conv = self._project(x, state.conv)
        y, state = self._run(q, k, v, gates, state, conv)
        return self._output(x, y), state

    def retrieve(self, x: Tensor, state: MemoryState | None = None) -> Tensor:
        """Read only: every position of x reads the state's current weights (no update,
        no chunk-causality inside x). The convolution uses the state's context."""
        self._check_input(x)
        state = self._check_state(state, x)
        x = self._norm_input(x)
        q, _, _, _, _ = self._project(x, state.conv)
        return self._output(x, self.read_associations(q, state))

    def update(self, x: Tensor, state: MemoryState | None = None) -> MemoryState:
        """Write only: store x's key→value associations chunk by chunk (an incomplete
        final chunk waits in the state until a later call completes it)."""
        self._check_input(x)
        state = self._check_state(state, x)
        _, k, v, gates, conv = self._project(self._norm_input(x), state.conv)
        return self._run(None, k, v, gates, state, conv)[1]

    # --- below the projections: the associative memory itself -------------------------

    def write_associations(
        self, k: Tensor, v: Tensor, gate_logits: Tensor, state: MemoryState
    ) -> MemoryState:
        """Store key→value pairs directly: k, v ∈ [B, H, T, head_dim], gate logits
        [B, H, T, 3] (θ, α, η before their squashing). Same chunking as ``update``;
        the convolution context is left as it is. For probes and tests."""
        return self._run(None, k, v, gate_logits, state, state.conv)[1]

    def read_associations(self, q: Tensor, state: MemoryState) -> Tensor:
        """M(q) with the state's weights, per head: q ∈ [B, H, T, head_dim] → same shape."""
        B, H, T, d = q.shape
        W = [w.reshape(B * H, *w.shape[2:]) for w in state.weights]
        return memory_mlp(W, q.reshape(B * H, T, d))[0].reshape(B, H, T, d)
