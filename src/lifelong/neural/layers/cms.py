"""Continuum Memory System (CMS): MLP blocks that keep learning, each at its own frequency.

Nested Learning (Behrouz, Razaviyayn, Zhong, Mirrokni; NeurIPS 2025, full version
arXiv 2512.24695), §7.1. A Transformer's MLP is a memory written once, in
pre-training, and never again; attention is a memory rewritten every token and
dropped after the context. The CMS fills the frequencies in between: a chain of
MLP blocks, level ℓ with its own chunk size C^(ℓ),

    y_t = MLP^(f_k)(MLP^(f_{k−1})(… MLP^(f_1)(x_t)))                      (Eq. 70)

    θ^(ℓ)_{i+1} = θ^(ℓ)_i − η^(ℓ) Σ_{t=i−C^(ℓ)}^{i} ∇L(θ^(ℓ)_t; x_t)   if i ≡ 0 (mod C^(ℓ))
                = θ^(ℓ)_i                                          otherwise  (Eq. 71)

where L is the task's own objective — for a language model, next-token
prediction on the context itself (the paper, below Eq. 71). Within its chunk a
level's weights are fixed; at the chunk boundary it takes one step on the
gradients its chunk accumulated. The error signal comes from the loss at the
top of the network, so the *model* drives the updates: ``lm.CausalLM`` runs a
CMS model chunk by chunk, takes the gradient of the chunk's next-token loss
with respect to every level's current weights and hands it to ``learn``.
This module holds the levels and does the arithmetic of Eq. 71.

Variants (§7.1):

- ``sequential`` (Eq. 70, 73; the default): the chain above, each level a
  pre-norm residual block; every level's initial weights are learned by the
  outer loop (backpropagation through the in-context updates).
- ``headwise`` (Eq. 74): independent levels read the same input and a learned
  weighted sum aggregates them, y = x + Σ_ℓ w_ℓ MLP^(ℓ)(norm(x)), w = softmax(a).
- ``nested`` (Eq. 72): the chain, but level s+1 is re-initialised after every
  chunk of the slower level s, to an initial state that level s itself learns
  at its own frequency (one step on the gradients level s+1 saw in that chunk;
  see ``learn`` for the first-order meta-gradient used).

Outer training: ``learn`` is plain tensor arithmetic, so when the model takes
the inner gradients with ``create_graph=True`` the outer loss differentiates
through every in-context update into the initial weights and the learning
rates. Each sequence of a batch owns its weights (``CMSState``, ``[B, …]``).

``cms_naive.py`` holds the float64 token-by-token reference.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError, StateError
from lifelong.neural.streaming import StateBundle, check_owned

VARIANTS = ("sequential", "headwise", "nested")
ACTIVATIONS = ("silu", "gelu_tanh")


@dataclass
class CMSConfig:
    dim: int = 64
    hidden: int = 176  # width of each level's gated MLP
    chunk_sizes: tuple[int, ...] = (16,)  # C^(ℓ) per level, in chain order
    variant: str = "sequential"
    activation: str = "silu"  # silu: SwiGLU; gelu_tanh: GeGLU (Gemma's MLP)
    # η^(ℓ) = max_lr · sigmoid(logit), one learned logit per level, started at ``lr``;
    # learn_lr=False keeps η^(ℓ) = lr fixed (0 allowed: the level never moves).
    lr: float | tuple[float, ...] = 1e-3
    max_lr: float = 1e-2
    learn_lr: bool = True
    norm: bool = True  # pre-norm (RMSNorm) before each level; False: the caller normalizes
    residual: bool = True  # x + …; False: the bare output (a layer that adds its own residual)
    norm_eps: float = 1e-6
    # Outer training differentiates through the in-context updates (the inner gradients
    # keep their graph: second order). False: first order — the inner gradients are
    # data, the outer gradient still reaches θ_0 and η through the writes (cheaper).
    second_order: bool = True

    def __post_init__(self) -> None:
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)
        if not self.chunk_sizes or min(self.chunk_sizes) < 1:
            raise ConfigError("CMS needs at least one level with chunk size >= 1",
                              hint="e.g. chunk_sizes = [16, 64]")
        base = min(self.chunk_sizes)
        if any(c % base for c in self.chunk_sizes):
            raise ConfigError(
                f"CMS chunk sizes {list(self.chunk_sizes)} are not all multiples of the smallest ({base})",
                hint="the model steps in chunks of the smallest size; pick e.g. 16, 64, 256",
            )
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown CMS variant {self.variant!r}", hint=f"use one of {VARIANTS}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown CMS activation {self.activation!r}",
                              hint=f"use one of {ACTIVATIONS}")
        if self.variant == "nested":
            for slow, fast in zip(self.chunk_sizes, self.chunk_sizes[1:]):
                if slow <= fast or slow % fast:
                    raise ConfigError(
                        f"nested CMS: level chunk sizes must shrink, each a multiple of the next "
                        f"(got {list(self.chunk_sizes)})",
                        hint="level s re-initialises level s+1 after each of its chunks: e.g. 256, 64, 16",
                    )
        lrs = self.lrs
        if len(lrs) != len(self.chunk_sizes) or min(lrs) < 0:
            raise ConfigError("CMS lr: one non-negative value, or one per level",
                              hint=f"e.g. lr = 1e-3 or lr = {[1e-3] * len(self.chunk_sizes)}")
        if self.learn_lr and not all(0 < lr < self.max_lr for lr in lrs):
            raise ConfigError(f"CMS lr {list(lrs)} must lie in (0, max_lr={self.max_lr}) when learned",
                              hint="lower lr, raise max_lr, or set learn_lr = false")

    @property
    def levels(self) -> int:
        return len(self.chunk_sizes)

    @property
    def step(self) -> int:
        """The model's stride: every level's boundary is a multiple of it."""
        return min(self.chunk_sizes)

    @property
    def lrs(self) -> tuple[float, ...]:
        lr = self.lr
        if isinstance(lr, (int, float)):
            return (float(lr),) * len(self.chunk_sizes)
        return tuple(float(x) for x in lr)

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- the level MLP


def gated_mlp(x: Tensor, w: tuple[Tensor, Tensor, Tensor], activation: str) -> Tensor:
    """One level: (act(x W_gate) ⊙ x W_up) W_down with per-sequence weights ``[B, in, out]``."""
    gate, up, down = w
    # per-sequence weights: torch.bmm straight away (``@`` adds expand / reshape / view steps,
    # and as many autograd nodes, around the same bmm); shared [in, out] weights: ``@``
    mm = torch.bmm if x.dim() == 3 and gate.dim() == 3 else torch.matmul
    a = mm(x, gate)
    a = F.silu(a) if activation == "silu" else F.gelu(a, approximate="tanh")
    return mm(a * mm(x, up), down)


def rms_norm(x: Tensor, gain: Tensor, eps: float) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


# --------------------------------------------------------------------------- state


@dataclass
class CMSState(StateBundle):
    """What a CMS carries between chunks, one row per sequence.

    - ``weights[ℓ]``  the level's current (gate, up, down) weights, ``[B, in, out]``;
    - ``grads[ℓ]``    Σ of the inner gradients of the level's current chunk (Eq. 71's sum);
    - ``inits[ℓ]``    nested variant only: the initial state level ℓ is reset to, learned
                      by level ℓ−1 (level 0's is the outer parameter; stored for ℓ ≥ 1);
    - ``init_grads[ℓ]`` the gradients level ℓ−1 accumulates for ``inits[ℓ]``;
    - ``position``    tokens whose gradients have been taken, ``[B]``;
    - ``updates``     how many times each level has been written, ``[B, levels]`` (audit).
    """

    weights: tuple[tuple[Tensor, ...], ...]
    grads: tuple[tuple[Tensor, ...], ...]
    inits: tuple[tuple[Tensor, ...], ...]
    init_grads: tuple[tuple[Tensor, ...], ...]
    position: Tensor
    updates: Tensor
    fingerprint: str = ""
    config: dict = field(default_factory=dict, compare=False)

    FORMAT_NAME = "lifelong.neural.CMSState"


# --------------------------------------------------------------------------- the module


class ContinuumMemory(nn.Module):
    """The CMS as the feed-forward part of a block: ``forward(x, state) -> x + …``.

    Residual connections and pre-norms are inside (one per level for the
    chain variants), so it replaces a block's ``x + MLP(norm(x))`` whole.
    ``forward`` only reads; ``learn`` writes (Eq. 71).
    """

    def __init__(self, config: CMSConfig) -> None:
        super().__init__()
        self.config = c = config
        L = c.levels
        self.gate = nn.ParameterList(nn.Parameter(torch.empty(c.dim, c.hidden)) for _ in range(L))
        self.up = nn.ParameterList(nn.Parameter(torch.empty(c.dim, c.hidden)) for _ in range(L))
        self.down = nn.ParameterList(nn.Parameter(torch.empty(c.hidden, c.dim)) for _ in range(L))
        n_norms = (1 if c.variant == "headwise" else L) if c.norm else 0
        self.norms = nn.ParameterList(nn.Parameter(torch.ones(c.dim)) for _ in range(n_norms))
        if c.variant == "headwise":
            self.agg = nn.Parameter(torch.zeros(L))  # softmax(0) = the mean of the levels
        lrs = torch.tensor(c.lrs)
        if c.learn_lr:
            self.lr_logit = nn.Parameter(torch.log(lrs / (c.max_lr - lrs)))
        else:
            self.register_buffer("lr_fixed", lrs, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        for g, u, d in zip(self.gate, self.up, self.down):
            nn.init.normal_(g, std=c.dim**-0.5)
            nn.init.normal_(u, std=c.dim**-0.5)
            # the output starts small so a deep chain starts near the identity
            nn.init.normal_(d, std=c.hidden**-0.5 / math.sqrt(2 * c.levels))

    @torch.no_grad()
    def load_mlp(self, gate: Tensor, up: Tensor, down: Tensor) -> None:
        """Every level starts as one pretrained MLP (§7.3, ad-hoc level stacking).

        Weights in ``[in, out]`` layout (``nn.Linear.weight.T``)."""
        for g, u, d in zip(self.gate, self.up, self.down):
            g.copy_(gate)
            u.copy_(up)
            d.copy_(down)

    # --- learning rates -----------------------------------------------------------

    def lrs(self) -> Tensor:
        """η^(ℓ) per level, ``[levels]``."""
        if self.config.learn_lr:
            return self.config.max_lr * torch.sigmoid(self.lr_logit)
        return self.lr_fixed

    # --- state ----------------------------------------------------------------------

    def _level_params(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.gate[i], self.up[i], self.down[i]

    def init_state(self, batch_size: int) -> CMSState:
        """Fresh state: every level at its learned initial weights θ^(ℓ)_0."""
        c = self.config
        B = batch_size

        def expand(ws: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(w.unsqueeze(0).expand(B, *w.shape) for w in ws)

        weights = tuple(expand(self._level_params(i)) for i in range(c.levels))
        zeros = tuple(tuple(torch.zeros_like(w) for w in ws) for ws in weights)
        nested = c.variant == "nested"
        inits = weights[1:] if nested else ()
        init_grads = zeros[1:] if nested else ()
        p = self.gate[0]
        return CMSState(
            weights=weights, grads=zeros, inits=inits, init_grads=init_grads,
            position=torch.zeros(B, dtype=torch.long, device=p.device),
            updates=torch.zeros(B, c.levels, dtype=torch.long, device=p.device),
            fingerprint=c.fingerprint(), config=asdict(c),
        )

    def check_state(self, state: CMSState | None, x: Tensor) -> CMSState:
        if state is None:
            return self.init_state(x.shape[0])
        check_owned(state, CMSState, self.config.fingerprint(), x.shape[0], "CMS configuration")
        return state

    # --- read (Eq. 70 / 74) -------------------------------------------------------------

    def forward(self, x: Tensor, state: CMSState | None = None) -> Tensor:
        """The block's feed-forward part with the state's current weights (no update)."""
        c = self.config
        state = self.check_state(state, x)

        def norm(i: int, h: Tensor) -> Tensor:
            return rms_norm(h, self.norms[i], c.norm_eps) if c.norm else h

        if c.variant == "headwise":
            h = norm(0, x)
            w = torch.softmax(self.agg, dim=0)
            mix = sum(w[i] * gated_mlp(h, state.weights[i], c.activation) for i in range(c.levels))
            return x + mix if c.residual else mix
        for i in range(c.levels):  # sequential and nested: the chain
            y = gated_mlp(norm(i, x), state.weights[i], c.activation)
            x = x + y if c.residual else y
        return x

    def fast_weights(self, state: CMSState) -> list[Tensor]:
        """The tensors the inner gradient is taken with respect to, level by level."""
        return [w for ws in state.weights for w in ws]

    # --- write (Eq. 71, 72) -------------------------------------------------------------

    def learn(self, state: CMSState, grads: list[Tensor], n_tokens: int) -> CMSState:
        """Add one step's inner gradients (``grads`` in ``fast_weights`` order, the sum over
        ``n_tokens`` tokens of ∇L) and write every level whose chunk ends here (Eq. 71).

        The model calls this once per ``config.step`` tokens, so chunk boundaries always
        fall on a call. Nested (Eq. 72): level ℓ ≥ 1 also accumulates the gradient for its
        initial state; when the slower level ℓ−1 reaches its boundary it takes one step on
        that initial state and resets level ℓ to it. The meta-gradient used is first order
        — the sum of the gradients at the weights level ℓ actually used — as in
        first-order MAML (the exact one would differentiate through level ℓ's writes
        across the whole slow chunk; see BENCHMARKS.md, deviations).
        """
        c = self.config
        if n_tokens != c.step or grads is None:
            raise StateError(f"CMS.learn steps {c.step} tokens at a time (got {n_tokens})",
                             hint="drive the CMS through lm.CausalLM")
        k = 3
        g = [tuple(grads[i * k:(i + 1) * k]) for i in range(c.levels)]
        pos = state.position + n_tokens
        p0 = int(pos[0])
        lrs = self.lrs().to(state.weights[0][0].dtype)
        weights, acc = list(state.weights), list(state.grads)
        inits, init_acc = list(state.inits), list(state.init_grads)
        written = torch.zeros(c.levels, dtype=torch.long, device=pos.device)
        p_start = p0 - n_tokens

        def add(sums: tuple[Tensor, ...], chunk: int, new: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            # a sum whose chunk starts at this step is still zero (it was reset at the last
            # boundary): it becomes the step's gradient as is, with no addition
            return tuple(new) if p_start % chunk == 0 else tuple(a + gi for a, gi in zip(sums, new))

        for i in range(c.levels):
            acc[i] = add(acc[i], c.chunk_sizes[i], g[i])
            if c.variant == "nested" and i >= 1:
                init_acc[i - 1] = add(init_acc[i - 1], c.chunk_sizes[i - 1], g[i])
        for i in range(c.levels):
            if p0 % c.chunk_sizes[i] == 0:  # Eq. 71: one step on the chunk's summed gradients
                weights[i] = tuple(w - lrs[i] * a for w, a in zip(weights[i], acc[i]))
                acc[i] = tuple(torch.zeros_like(a) for a in acc[i])
                written[i] = 1
        if c.variant == "nested":
            for i in range(1, c.levels):
                if p0 % c.chunk_sizes[i - 1] == 0:  # level i−1's chunk ends: Eq. 72
                    inits[i - 1] = tuple(w - lrs[i - 1] * a for w, a in zip(inits[i - 1], init_acc[i - 1]))
                    init_acc[i - 1] = tuple(torch.zeros_like(a) for a in init_acc[i - 1])
                    weights[i] = inits[i - 1]  # level i restarts from its (new) initial state
                    acc[i] = tuple(torch.zeros_like(a) for a in acc[i])
        return replace(
            state, weights=tuple(weights), grads=tuple(acc), inits=tuple(inits),
            init_grads=tuple(init_acc), position=pos, updates=state.updates + written,
        )
