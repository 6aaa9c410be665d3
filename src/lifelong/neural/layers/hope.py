"""Self-modifying Titans, and the Hope and Hope-Attention blocks.

Nested Learning (Behrouz, Razaviyayn, Zhong, Mirrokni; NeurIPS 2025, full
version arXiv 2512.24695), §8. A Transformer's projections W_k, W_v, W_q are
fixed after pre-training; self-modifying Titans turns every one of them but
W_q into a memory that keeps learning in context, and lets each memory make
its own training targets:

    y_t = M_mem,t−1(q_t),   q_t = x_t W_q  (the one fixed projection)
    k_t = M_k,t−1(x_t),  v_t = M_v,t−1(x_t),  η_t = M_η,t−1(x_t),  α_t = M_α,t−1(x_t)
    v̂_□,t = M_□,t−1(v_t)                            (each memory generates its own values)
    M_□,t = M_□,t−1(α_t I − η_t k_t k_tᵀ) − η_t ∇L(M_□,t−1; k_t, v̂_□,t)
                                         □ ∈ {k, v, η, α, mem}                  (Eq. 88)
    L(M; k, v) = ‖M(k) − v‖²,   M_□(x) = x + σ(x A_□) B_□                  (Eq. 89/91)

The update is delta-rule gradient descent (DGD, §4.5) with weight decay α_t.
For a two-layer memory we read "M (α I − η k kᵀ)" as acting where k enters:
the first layer's matrix A (whose input is k) gets the rank-one correction,
A ← (α I − η k kᵀ) A − η ∇_A L; the second layer decays, B ← α B − η ∇_B L.
η and α are scalars per token and head: their memories end in one output,
M(x) = x S + σ(x A) B, with the skip S (a vector) learning like A, and
η_t = max_lr · sigmoid(M_η(x_t) + b_η), α_t = sigmoid(M_α(x_t) + b_α) with
learned biases b (so α starts near 1, η small).

Chunk-wise training (§8.2, Eq. 90). Everything a chunk needs — keys, values,
η, α, the self-generated values and every gradient — comes from the memories
as they were at the chunk's start, all in parallel; then the recurrence above
runs through the chunk with those gradients. The paper uses two chunk sizes,
one for M_mem and one for all the others (``chunk_memory``, ``chunk_other``).
The recurrence of A is a gated delta rule (decay α_t, strength η_t/α_t,
values −α_t e_t with e_t the error at A's output), so it runs in the WY form
of ``deltanet.chunk_gated_delta_rule`` (``delta_rule_state``); B's is a decayed sum.

As in the paper's Hope (§8.3) q and k are ℓ2-normalized and a causal
convolution (window 4) mixes neighbouring tokens first. Heads: each head owns
its five memories over its slice of the input; an output projection joins them.

Outer training differentiates through everything above (autograd; the inner
gradients are written out, so a CMS above can take a second derivative).
``hope_naive.py`` is the float64 token-by-token reference of Eq. 88/90.

Blocks (``lm.py``): **Hope** = self-modifying Titans then a CMS (Eq. 94–97);
**Hope-Attention** = softmax global attention then a CMS (§8.3).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError, ValidationError
from lifelong.neural.streaming import StateBundle, check_owned

MEMORIES = ("k", "v", "mem", "eta", "alpha")  # vector memories first, then the scalar ones
VECTOR = ("k", "v", "mem")


@dataclass
class SelfModConfig:
    dim: int = 64
    heads: int = 4
    hidden: int | None = None  # width of each memory's MLP; None: the head width
    chunk_memory: int = 8  # C of M_mem (Eq. 90)
    chunk_other: int = 8  # C of M_k, M_v, M_η, M_α
    conv_kernel: int = 4  # causal depthwise convolution on the input; 1 = none
    activation: str = "silu"  # σ of the memories
    max_lr: float = 0.5  # η_t ∈ (0, max_lr)
    lr_activation: str = "sigmoid"  # η_t = max_lr · sigmoid(·); "softplus": max_lr · softplus(·)
    init_lr_logit: float = -2.0  # b_η: η starts near max_lr · sigmoid(−2) ≈ 0.06
    init_retention_logit: float = 6.9  # b_α: α starts near 0.999
    # ℓ2-normalize the values as well as q and k (the paper normalizes q and k). The
    # self-generated targets v̂ = M(v) feed back into the memories that make them; with
    # unnormalized v the loop diverged within a few hundred tokens at every tried η
    # (BENCHMARKS.md, deviations).
    normalize_v: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "heads", "chunk_memory", "chunk_other", "conv_kernel"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"self-modifying Titans: {name} must be >= 1", hint="set a positive value")
        if self.dim % self.heads:
            raise ConfigError(f"self-modifying Titans: dim {self.dim} is not divisible by heads {self.heads}",
                              hint="pick heads that divides dim")
        lo, hi = sorted((self.chunk_memory, self.chunk_other))
        if hi % lo:
            raise ConfigError("self-modifying Titans: one chunk size must be a multiple of the other",
                              hint="e.g. chunk_memory = 8, chunk_other = 16")
        if self.activation not in ("silu", "gelu"):
            raise ConfigError(f"unknown activation {self.activation!r}", hint="use silu or gelu")
        if self.lr_activation not in ("sigmoid", "softplus"):
            raise ConfigError(f"unknown lr_activation {self.lr_activation!r}", hint="sigmoid or softplus")
        if self.max_lr <= 0:
            raise ConfigError("self-modifying Titans: max_lr must be positive", hint="e.g. 0.5")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def memory_hidden(self) -> int:
        return int(self.hidden or self.head_dim)

    @property
    def unit(self) -> int:
        """The step of the recurrence: the smaller chunk; every boundary falls on one."""
        return min(self.chunk_memory, self.chunk_other)

    def chunk_of(self, name: str) -> int:
        return self.chunk_memory if name == "mem" else self.chunk_other

    def shapes(self, name: str) -> tuple[tuple[int, int], ...]:
        """(in, out) of A, B (and S) of one memory of one head."""
        d, h = self.head_dim, self.memory_hidden
        if name in VECTOR:
            return ((d, h), (h, d))
        return ((d, h), (h, 1), (d, 1))

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def act(x: Tensor, kind: str) -> Tensor:
    return F.silu(x) if kind == "silu" else F.gelu(x)


def act_grad(x: Tensor, kind: str) -> Tensor:
    """σ'(x), written out so the inner gradient is plain tensor arithmetic."""
    if kind == "silu":
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for [N, m, k] × [N, k, n]: torch.bmm straight away (``@`` on 3-D tensors adds
    expand / reshape / view steps, and as many autograd nodes, around the same bmm)."""
    return torch.bmm(a, b)


def delta_rule_state(S0: Tensor, k: Tensor, v: Tensor, log_a: Tensor, beta: Tensor) -> Tensor:
    """End state of S_t = a_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ over one chunk.

    The WY form of ``deltanet.chunk_gated_delta_rule`` (same recurrence), keeping
    only the final state: the chunk's "new values" D = U − W S0 solve the unit
    lower-triangular system (I + A)[U | W] = [β v | β e^{g} k], whose inverse is
    the finite product (I − A)(I + A²)(I + A⁴)… since A is strictly lower
    triangular (nilpotent): a few batched matmuls, cheap to differentiate twice.
    S0 [N, dk, dv], k [N, c, dk], v [N, c, dv], log_a, beta [N, c]."""
    c = k.shape[1]
    lg = log_a.cumsum(-1)
    strict = torch.ones(c, c, dtype=torch.bool, device=k.device).tril(-1)
    decay = (lg[:, :, None] - lg[:, None, :]).masked_fill(~strict, float("-inf")).exp()
    A = beta[:, :, None] * decay * bmm(k, k.transpose(1, 2))
    eye = torch.eye(c, dtype=k.dtype, device=k.device)
    inv, power, P = eye - A, 2, bmm(A, A)
    while power < c:
        inv = bmm(inv, eye + P)
        P, power = bmm(P, P), power * 2
    U = bmm(inv, beta[..., None] * v)
    W = bmm(inv, (beta * lg.exp())[..., None] * k)
    D = U - bmm(W, S0)
    last = lg[:, -1]
    tail = (last[:, None] - lg).exp()
    return last.exp()[:, None, None] * S0 + bmm((k * tail[..., None]).transpose(1, 2), D)


def memory_forward(x: Tensor, w: tuple[Tensor, ...], kind: str) -> tuple[Tensor, Tensor]:
    """M(x) for memories ``w`` ([N, in, out] each) over ``x [N, T, d]``; also the hidden
    pre-activation. Vector memories: x + σ(x A) B; scalar ones: x S + σ(x A) B."""
    z = x @ w[0]
    out = act(z, kind) @ w[1]
    out = out + (x if len(w) == 2 else x @ w[2])
    return out, z


# --------------------------------------------------------------------------- state


@dataclass
class SelfModState(StateBundle):
    """The memories of every head, one row per sequence.

    - ``read[m]``  memory m's weights at the start of its chunk (what tokens read, and
                   where gradients are taken, Eq. 90), ``[B, H, in, out]`` per matrix;
    - ``run[m]``   the same weights as the recurrence has carried them so far;
    - ``conv``     the last ``conv_kernel − 1`` inputs, so the convolution continues;
    - ``pending``  inputs of an unfinished step: a call that ends mid-step keeps them and
                   the next call redoes the step from this state (so split calls equal one);
    - ``position`` tokens written so far (a multiple of the step), ``[B]``.
    """

    read: tuple[tuple[Tensor, ...], ...]
    run: tuple[tuple[Tensor, ...], ...]
    conv: Tensor
    pending: Tensor
    position: Tensor
    fingerprint: str = ""
    config: dict = field(default_factory=dict, compare=False)

    FORMAT_NAME = "lifelong.neural.SelfModState"


# --------------------------------------------------------------------------- the layer


class SelfModifyingTitans(nn.Module):
    """``forward(x, state) -> (y, state)``, x, y ∈ [B, T, dim]."""

    def __init__(self, config: SelfModConfig) -> None:
        super().__init__()
        self.config = c = config
        H = c.heads
        self.conv = nn.Parameter(torch.zeros(c.dim, c.conv_kernel))
        self.to_q = nn.Linear(c.dim, c.dim, bias=False)
        self.out = nn.Linear(c.dim, c.dim, bias=False)
        # the memories' initial states M_□,0, meta-learned by the outer loop
        self.init = nn.ParameterDict({
            m: nn.ParameterList(nn.Parameter(torch.empty(H, i, o)) for i, o in c.shapes(m)) for m in MEMORIES
        })
        self.lr_bias = nn.Parameter(torch.full((H,), c.init_lr_logit))
        self.retention_bias = nn.Parameter(torch.full((H,), c.init_retention_logit))
        # False: the memories are read and never written (the ablation without them)
        self.writes = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        nn.init.normal_(self.conv, std=0.1 / math.sqrt(c.conv_kernel))
        self.conv[:, -1] += 1.0  # starts near the identity: the current token
        nn.init.normal_(self.to_q.weight, std=c.dim**-0.5)
        nn.init.normal_(self.out.weight, std=c.dim**-0.5)
        for m in MEMORIES:
            A, B, *S = self.init[m]
            nn.init.normal_(A, std=c.head_dim**-0.5)
            nn.init.normal_(B, std=0.1 * c.memory_hidden**-0.5)  # starts near the residual
            for s in S:
                nn.init.zeros_(s)

    # --- state ------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> SelfModState:
        c = self.config
        B = batch_size
        w = tuple(tuple(p.unsqueeze(0).expand(B, *p.shape) for p in self.init[m]) for m in MEMORIES)
        p = self.to_q.weight
        return SelfModState(
            read=w, run=w,
            conv=p.new_zeros(B, c.conv_kernel - 1, c.dim),
            pending=p.new_zeros(B, 0, c.dim),
            position=torch.zeros(B, dtype=torch.long, device=p.device),
            fingerprint=c.fingerprint(), config=asdict(c),
        )

    def _check(self, x: Tensor, state: SelfModState | None) -> SelfModState:
        c = self.config
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != c.dim or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValidationError(f"self-modifying Titans expects a float input [batch, tokens, {c.dim}], "
                                  f"got {shape}", hint="reshape the input to [B, T, dim]")
        if state is None:
            return self.init_state(x.shape[0])
        check_owned(state, SelfModState, c.fingerprint(), x.shape[0], "self-modifying Titans configuration")
        return state

    # --- pieces -------------------------------------------------------------------------

    def _convolve(self, x: Tensor, cache: Tensor) -> Tensor:
        """Causal depthwise convolution over [cache | x]; tap j looks back K−1−j tokens."""
        K = self.config.conv_kernel
        xx = torch.cat([cache, x], dim=1)
        T = x.shape[1]
        return sum(xx[:, j : j + T] * self.conv[:, j] for j in range(K))

    def _heads(self, t: Tensor) -> Tensor:
        """[B, T, H·d] → [B·H, T, d]."""
        B, T, _ = t.shape
        c = self.config
        return t.view(B, T, c.heads, c.head_dim).transpose(1, 2).reshape(B * c.heads, T, c.head_dim)

    @staticmethod
    def _flat(w: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(t.reshape(-1, *t.shape[2:]) for t in w)

    # --- the packed layout ------------------------------------------------------------------
    # Inside ``forward`` the five memories travel packed: every first-layer matrix reads
    # the same kind of input and, in the update, the same keys, so they sit side by side as
    # the columns of one matrix, P = [A_k | A_v | A_mem | A_η | A_α | S_η | S_α] ([N, d, 5h+2]);
    # one matmul then computes every memory's hidden pre-activation (and the scalar
    # memories' skip term), and one delta-rule call writes all of them (the rule acts on
    # each column alone, and its keys, decays and strengths are shared). The second-layer
    # matrices B stay one per memory. The state keeps one tuple per memory.

    def _pack(self, w: tuple[tuple[Tensor, ...], ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Per-memory weights (flat, [N, in, out]) → (P, (B_k, B_v, B_mem, B_η, B_α))."""
        firsts = [w[i][0] for i in range(len(MEMORIES))]
        skips = [w[i][2] for i in range(len(VECTOR), len(MEMORIES))]
        return torch.cat(firsts + skips, dim=-1), tuple(w[i][1] for i in range(len(MEMORIES)))

    def _unpack(self, packed: tuple[Tensor, tuple[Tensor, ...]]) -> tuple[tuple[Tensor, ...], ...]:
        P, Bs = packed
        h, n, nv = self.config.memory_hidden, len(MEMORIES), len(VECTOR)
        parts = P.split([h] * n + [1] * (n - nv), dim=-1)
        return tuple((parts[i], Bs[i]) if i < nv else (parts[i], Bs[i], parts[n + i - nv]) for i in range(n))

    # --- one step of the recurrence (Eq. 90) ---------------------------------------------

    def _step(
        self, xh: Tensor, qh: Tensor, read: tuple[Tensor, tuple[Tensor, ...]],
        run: tuple[Tensor, tuple[Tensor, ...]], write: bool, B: int,
    ) -> tuple[Tensor, tuple[Tensor, tuple[Tensor, ...]]]:
        """Read a step's tokens with the chunk-start memories; if ``write`` (a whole step),
        run the recurrence through it. xh, qh [N=B·H, U, d]; ``read``, ``run`` packed."""
        c = self.config
        kind, h = c.activation, c.memory_hidden
        P, Bs = read
        mem = MEMORIES.index("mem")
        y = bmm(act(bmm(qh, P[..., mem * h : (mem + 1) * h]), kind), Bs[mem]) + qh  # y = M_mem(q)
        if not write:
            return y, run
        n, nv = len(MEMORIES), len(VECTOR)
        H5 = n * h

        # every memory on x: M_□(x) = x + σ(z_□) B_□, or x S_□ + σ(z_□) B_□, z = x A (split,
        # not slices: one backward node for all the pieces)
        z_x, *skip_x = bmm(xh, P).split([H5] + [1] * (n - nv), dim=-1)  # z of every memory, x·S_η, x·S_α
        on_x = [bmm(a_i, b) + (xh if i < nv else skip_x[i - nv])
                for i, (a_i, b) in enumerate(zip(act(z_x, kind).split(h, dim=-1), Bs))]
        k = F.normalize(on_x[MEMORIES.index("k")], dim=-1)
        v = on_x[MEMORIES.index("v")]
        if c.normalize_v:
            v = F.normalize(v, dim=-1)
        bias_eta = self.lr_bias.repeat(B)[:, None]  # [N, 1], heads vary fastest
        bias_alpha = self.retention_bias.repeat(B)[:, None]
        squash = torch.sigmoid if c.lr_activation == "sigmoid" else F.softplus
        eta = c.max_lr * squash(on_x[MEMORIES.index("eta")][..., 0] + bias_eta)
        alpha = torch.sigmoid(on_x[MEMORIES.index("alpha")][..., 0] + bias_alpha)

        # ∇L(M_□; k_t, v̂_□,t) at the chunk-start weights, for every token at once (the
        # self-generated target v̂ = M_□(v) is data for the inner gradient)
        # ∂L/∂M(k) = 2 (M(k) − M(v)) = 2 ((σ(z_k) − σ(z_v)) B + skip(k) − skip(v))
        z, *skip_k = bmm(k, P).split([H5] + [1] * (n - nv), dim=-1)
        z_v, *skip_v = bmm(v, P).split([H5] + [1] * (n - nv), dim=-1)
        a = act(z, kind)
        diffs = [k - v] * nv + [s_k - s_v for s_k, s_v in zip(skip_k, skip_v)]
        r2 = [2 * (bmm(d_a, b) + d) for d_a, b, d in zip((a - act(z_v, kind)).split(h, dim=-1), Bs, diffs)]
        # ∂L/∂z, z = k A, every memory; then the scalar memories' ∂L/∂(k S) = r2
        e = torch.cat([bmm(r, b.transpose(1, 2)) for r, b in zip(r2, Bs)], dim=-1) * act_grad(z, kind)
        firsts = torch.cat([e, *r2[nv:]], dim=-1)  # [N, U, 5h + 2]: what P's columns see
        P_run, B_run = run
        # B ← α B − η ∇_B L, token by token: a decayed sum (∇_B L = σ(z)ᵀ r2 per token)
        log_a = torch.log(alpha)  # [N, U]
        total = log_a.sum(-1)
        tail = (total[:, None] - log_a.cumsum(-1)).exp()  # Π_{s>t} α_s
        aw = (a * (eta * tail).unsqueeze(-1)).transpose(1, 2).split(h, dim=1)
        decay = total.exp()[:, None, None]
        new_B = tuple(decay * b - bmm(w, r) for b, w, r in zip(B_run, aw, r2))
        # A (and S) ← (α I − η k kᵀ) A − η k eᵀ: a gated delta rule with decay α, strength
        # β = η/α and values −α e, for all five memories in one call
        P_new = delta_rule_state(P_run, k, firsts * (-alpha[..., None]), log_a, eta / alpha)
        return y, (P_new, new_B)

    # --- forward ---------------------------------------------------------------------------

    def forward(self, x: Tensor, state: SelfModState | None = None) -> tuple[Tensor, SelfModState]:
        c = self.config
        state = self._check(x, state)
        B, T, _ = x.shape
        H, U = c.heads, c.unit
        n_old = state.pending.shape[1]
        xx = torch.cat([state.pending.to(x.dtype), x], dim=1) if n_old else x
        xc = self._convolve(xx, state.conv.to(x.dtype))
        q = F.normalize(self._heads(self.to_q(xc)), dim=-1)
        xh = self._heads(xc)
        read = self._pack(tuple(self._flat(w) for w in state.read))
        same = all(r is w for r, w in zip(state.read, state.run))  # no memory written since its read
        run = read if same else self._pack(tuple(self._flat(w) for w in state.run))
        h = c.memory_hidden
        mem = MEMORIES.index("mem")
        cols = torch.zeros(read[0].shape[-1], dtype=torch.bool, device=x.device)
        cols[mem * h : (mem + 1) * h] = True  # P's columns that belong to M_mem
        pos = int(state.position[0])
        outs = []
        n_done = 0
        K = c.conv_kernel
        conv_cache = state.conv
        TT = xx.shape[1]
        for s in range(0, TT, U):
            e = min(s + U, TT)
            whole = e - s == U
            y, run = self._step(xh[:, s:e], q[:, s:e], read, run, whole and self.writes, B)
            outs.append(y)
            if not whole:
                break
            pos += U
            n_done = e
            # a memory whose chunk ends here reads its new weights from now on
            ends_mem, ends_other = pos % c.chunk_memory == 0, pos % c.chunk_other == 0
            if ends_mem and ends_other:
                read = run
            elif ends_mem or ends_other:
                take = cols if ends_mem else ~cols
                read = (torch.where(take, run[0], read[0]),
                        tuple(r if (i == mem) == ends_mem else o for i, (o, r) in enumerate(zip(read[1], run[1]))))
        if n_done:  # the convolution context as it is after the last whole step
            ctx = torch.cat([conv_cache.to(x.dtype), xx[:, :n_done]], dim=1)
            conv_cache = ctx[:, ctx.shape[1] - (K - 1):]
        y = torch.cat(outs, dim=1) if outs else xh.new_zeros(B * H, 0, c.head_dim)
        y = y.view(B, H, TT, c.head_dim).transpose(1, 2).reshape(B, TT, c.dim)[:, n_old:]

        def unflat(w: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(t.view(B, H, *t.shape[1:]) for t in w)

        read_w = tuple(unflat(w) for w in self._unpack(read))
        run_w = read_w if run is read else tuple(unflat(w) for w in self._unpack(run))
        new_state = SelfModState(
            read=read_w,
            run=run_w,
            conv=conv_cache, pending=xx[:, n_done:],
            position=torch.full_like(state.position, pos),
            fingerprint=state.fingerprint, config=state.config,
        )
        return self.out(y), new_state
