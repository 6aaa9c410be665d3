"""Hand-written forward and backward passes for the memory's default path.

- ``chunk_forward`` / ``chunk_backward``: one chunk of read + write (chunk gates
  with momentum) and its outer backward, second-order terms through SiLU''
  included. ``chunk_loop.py`` runs them over a run of chunks (or hands the run
  to the native loop, which computes the same equations).
- ``ConvSiluNorm``, ``RMSNormNoGain``, ``GatedHeadNorm``: the elementwise passes
  around the memory (the projections' convolution, SiLU and ℓ2 norms; the input
  norm; the output norm and gate).

Written by hand because on a CPU these passes cost as much as the matmuls;
the tests hold them to float64 autograd (``naive.py``) and finite differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------
# One chunk of read + write (chunk gates with momentum)
# ---------------------------------------------------------------------------


def silu_grads(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """SiLU'(z) and SiLU''(z), given h = SiLU(z) = z σ(z):

        SiLU'  = σ + z u,  SiLU'' = u (2 + z − 2h),  u = σ'(z) = σ − σ²
    """
    s = torch.sigmoid(z)
    u = torch.addcmul(s, s, s, value=-1)
    first = torch.addcmul(s, z, u)
    second = torch.add(z, h, alpha=-2).add_(2).mul_(u)
    return first, second


def chunk_forward(
    q: Tensor, k: Tensor, v: Tensor, two_theta: Tensor, keep: Tensor, eta: Tensor,
    W: list[Tensor], S: list[Tensor],
) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Read a chunk's queries and write its keys, for chunk gates with momentum:

        Y = M(Q);  Δ_L = (M(K) − V) ⊙ 2θ,  Δ_{l−1} = (Δ_l W_lᵀ) ⊙ σ'(Z_{l−1});
        G_l = H_{l−1}ᵀ Δ_l;  S'_l = η S_l − G_l;  W'_l = (1 − α) W_l + S'_l

    — the same arithmetic as ``ops.memory_mlp`` + ``ops.associative_backward`` +
    ``ops.apply_chunk`` (which remain the path for token gates, no momentum and
    partial chunks). Q, K, V [N, b, d], two_theta [N, b, 1], keep = 1 − α and
    eta [N]. Returns Y, the new weights and momenta, and what ``chunk_backward``
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


def chunk_backward(
    saved: list[Tensor], L: int, b: int, g_y: Tensor | None,
    g_w_new: list[Tensor | None], g_s_new: list[Tensor | None],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, list[Tensor], list[Tensor]]:
    """The outer backward of ``chunk_forward``, written out by hand: it
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
        first, second = silu_grads(zs[layer - 1][:, b:], hs[layer][:, b:])
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


# ---------------------------------------------------------------------------
# Around the memory: the projections' convolution, SiLU and ℓ2 norm; the
# input and output norms
# ---------------------------------------------------------------------------
#
# Written by hand, forward and backward, because on a CPU these passes over
# activation-sized tensors cost as much as the matmuls: every step works on a
# group of whole sequences at a time (as many as fit ``_GROUP_ELEMENTS``, so a
# group's rows stay in the CPU's cache between the steps, and short sequences
# such as MAC's segments do not pay one Python-level op per sequence) and
# writes straight into its destination layout, so nothing is copied to reorder it.

# Elements of [T, C] rows handled together: a group is ⌈this / (T·C)⌉ sequences.
_GROUP_ELEMENTS = 1 << 17


# pieces of at most this many tokens take the whole batch in one group (serving: one
# token or a chunk's piece per session), whatever their width
_SHORT = 32


def _groups(batch: int, tokens: int, rows: int) -> list[slice]:
    """Consecutive groups of sequences with about ``_GROUP_ELEMENTS`` elements each
    (one group for pieces of at most ``_SHORT`` tokens)."""
    if tokens <= _SHORT:
        return [slice(0, batch)]
    size = max(1, -(-_GROUP_ELEMENTS // max(rows, 1)))
    return [slice(i, min(i + size, batch)) for i in range(0, batch, size)]


def _conv_forward(cache: Tensor, x: Tensor, taps: Tensor, out: Tensor) -> None:
    """Depthwise causal convolution over time for a group of sequences, into ``out``:

        out[:, t] = Σ_j taps[j] ⊙ x[:, t − (K−1−j)]

    for the new inputs x ∈ [G, T, C], reading the K − 1 cached inputs of the state
    (``cache`` ∈ [G, K − 1, C]) before the first of them; taps ∈ [K, C] (each tap's
    weights one contiguous row: a strided broadcast operand keeps the CPU
    kernels from vectorizing). Every output adds its terms in the order of j."""
    K, T = taps.shape[0], x.shape[1]
    torch.mul(x, taps[K - 1], out=out)
    for j in range(K - 1):
        s, m = K - 1 - j, min(K - 1 - j, T)  # lookback; outputs that reach the cache
        if T > s:
            out[:, s:].addcmul_(x[:, : T - s], taps[j])
        if m:
            out[:, :m].addcmul_(cache[:, j : j + m], taps[j])


def _conv_backward(
    cache: Tensor, x: Tensor, taps: Tensor, g: Tensor,
    grad_cache: Tensor | None, grad_x: Tensor | None, grad_taps: Tensor | None,
) -> None:
    """Gradients of ``_conv_forward`` for a group of sequences from g = ∂ℒ/∂out:
    written into grad_cache and grad_x, accumulated into grad_taps (those not None).

    The input gradient accumulates K shifted products in one buffer; a tap's
    weight gradient Σ_t x[t − s] ⊙ g[t] is a dot product along time, one
    sequence after the other (the order of the sums of a one-sequence loop)."""
    K, T = taps.shape[0], x.shape[1]
    if grad_cache is not None:
        grad_cache.zero_()
    if grad_x is not None:
        torch.mul(g, taps[K - 1], out=grad_x)
    for j in range(K):
        s, m = K - 1 - j, min(K - 1 - j, T)
        if grad_x is not None and j < K - 1 and T > s:
            grad_x[:, : T - s].addcmul_(g[:, s:], taps[j])
        if grad_cache is not None and m:
            grad_cache[:, j : j + m].addcmul_(g[:, :m], taps[j])
    if grad_taps is not None:
        for i in range(x.shape[0]):
            for j in range(K):
                s, m = K - 1 - j, min(K - 1 - j, T)
                if T > s:
                    grad_taps[j] += torch.linalg.vecdot(x[i, : T - s], g[i, s:], dim=0)
                if m:
                    grad_taps[j] += torch.linalg.vecdot(cache[i, j : j + m], g[i, :m], dim=0)


class ConvSiluNorm(torch.autograd.Function):
    """raw = x W_qkv ∈ [B, T, 3·H·d] → q, k, v ∈ [B, H, T, d]:

        a = SiLU(conv(raw)),  q = a_q / ‖a_q‖,  k = a_k / ‖a_k‖,  v = a_v (/ ‖a_v‖)

    per head, with the convolution continued from the state's cache. With
    ``parts = 1`` raw holds the queries' third only (x W_q ∈ [B, T, H·d]) and the
    result is (q,): a read needs no keys or values. Forward
    and backward run a group of sequences at a time (``_groups``), all steps on
    it back to back while it is still in the CPU's cache; SiLU writes each third
    straight into its head-major tensor and the ℓ2 norms work in place there.
    Backward: (g − y ⟨g, y⟩) / ‖a‖ for q and k, SiLU' back into the [T, 3·H·d]
    layout (one reused buffer), then the convolution's gradients.
    """

    @staticmethod
    def forward(ctx, cache: Tensor, raw: Tensor, w: Tensor, heads: int,  # type: ignore[override]
                norm_values: bool = False, parts: int = 3):
        B, T, C = raw.shape
        d = C // (parts * heads)
        dtype = torch.promote_types(raw.dtype, w.dtype)  # (bf16 projections under autocast)
        raw, cache = raw.to(dtype), cache.to(dtype)
        taps = w.t().to(dtype).contiguous()  # [K, C]
        mixed = raw.new_empty(B, T, C)
        outs = [raw.new_empty(B, heads, T, d) for _ in range(parts)]
        n_norm = min(parts, 3 if norm_values else 2)  # q, k (and v)
        norms = [raw.new_empty(B, heads, T, 1) for _ in range(n_norm)]
        for i in _groups(B, T, T * C):
            _conv_forward(cache[i], raw[i], taps, mixed[i])
            thirds = mixed[i].view(i.stop - i.start, T, parts, heads, d)
            for c in range(parts):
                out = outs[c][i]  # [G, H, T, d]
                torch.ops.aten.silu.out(thirds[:, :, c], out=out.transpose(1, 2))
                if c < n_norm:  # q, k (, v): ℓ2-normalized over the head's features
                    norm = norms[c][i]
                    torch.linalg.vector_norm(out, dim=-1, keepdim=True, out=norm)
                    out.div_(norm.clamp_min_(1e-12))
        ctx.save_for_backward(cache, raw, taps, mixed, *outs[:n_norm], *norms)
        ctx.n_norm = n_norm
        ctx.heads = heads
        ctx.parts = parts
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        cache, raw, taps, mixed, *rest = ctx.saved_tensors
        n, P = ctx.n_norm, ctx.parts
        ys, ns = [*rest[:n], None, None][:P], [*rest[n:], None, None][:P]
        B, T, C = raw.shape
        heads = ctx.heads
        d = C // (P * heads)
        need_cache, need_raw, need_w = ctx.needs_input_grad[:3]
        grad_cache = torch.empty_like(cache) if need_cache else None
        grad_raw = torch.empty_like(raw) if need_raw else None
        grad_taps = torch.zeros_like(taps) if need_w else None
        groups = _groups(B, T, T * C)
        G = groups[0].stop - groups[0].start
        g_mixed_all = raw.new_empty(G, T, C)  # one group at a time
        through_norm_all = raw.new_empty(G, heads, T, d)
        for i in groups:
            size = i.stop - i.start
            g_mixed = g_mixed_all[:size]
            g_parts = g_mixed.view(size, T, P, heads, d)
            parts = mixed[i].view(size, T, P, heads, d)
            for c, (g, y, norm) in enumerate(zip(grads, ys, ns)):
                if g is None:
                    g_parts[:, :, c].zero_()
                    continue
                g = g[i].to(raw.dtype)
                if y is not None:  # through the ℓ2 norm
                    dot = torch.linalg.vecdot(g, y[i], dim=-1).unsqueeze(-1)
                    g = torch.addcmul(g, y[i], dot, value=-1, out=through_norm_all[:size]).div_(norm[i])
                torch.ops.aten.silu_backward.grad_input(
                    g.transpose(1, 2), parts[:, :, c], grad_input=g_parts[:, :, c]
                )
            _conv_backward(
                cache[i], raw[i], taps, g_mixed,
                None if grad_cache is None else grad_cache[i],
                None if grad_raw is None else grad_raw[i],
                grad_taps,
            )
        grad_w = None if grad_taps is None else grad_taps.t()
        return grad_cache, grad_raw, grad_w, None, None, None


def _inv_rms(x: Tensor) -> Tensor:
    """1 / √(mean(x²) + ε) over the last axis, keeping it (size 1)."""
    return torch.rsqrt(torch.linalg.vecdot(x, x).unsqueeze(-1).div_(x.shape[-1]).add_(1e-6))


def _rms_norm_grad(g: Tensor, xn: Tensor, out: Tensor | None = None) -> Tensor:
    """g − x̂ ⟨g, x̂⟩ / D: the RMS norm's backward before its 1/rms scale."""
    dot = torch.linalg.vecdot(g, xn).unsqueeze(-1).div_(xn.shape[-1])
    return torch.addcmul(g, xn, dot, value=-1, out=out)


class RMSNormNoGain(torch.autograd.Function):
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


class GatedHeadNorm(torch.autograd.Function):
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
