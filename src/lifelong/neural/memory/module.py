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

The update rule (``NeuralMemoryConfig.update``). ``"paper"`` is the above as
written (eqs. 8-14). ``"bounded"``, the default, stays in the same family — θ_t
is a data-dependent step size of the same recurrence — and makes one write
store much more without overflowing (``ops.chunk_coefficients``):

    S_t = η_t S_{t−1} + (1 − η_t) · (−θ̃_t ∇ℓ)      momentum as an average
    θ̃_t = max_lr · σ(·) / G_n,  G_n = max_i Σ_j |k_i · k_j| over chunk n's keys

with values ℓ2-normalized like keys (``value_norm``) and max_lr = 0.5, which
makes the summed stale step of a chunk contractive for a linear memory.
``lifelong bench memory --capacity`` measures both rules.

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
(``chunk_loop.py``; ``fused.py``: ``ConvSiluNorm``, ``GatedHeadNorm``,
``RMSNormNoGain``). On a CPU the run of chunks goes to a compiled loop
(``native.py``, ``csrc/chunk_loop.cpp``: the same equations, one memory per
thread, built on first use; eager PyTorch where it cannot be built). The tests
hold every path to float64 autograd through ``naive.py`` and to finite
differences.

Where the code lives: this file (the config and the layer, top to bottom),
``ops.py`` (the MLP, its associative gradient, the chunk coefficients),
``fused.py`` and ``chunk_loop.py`` (the default path), ``naive.py`` (the
float64 reference), ``state.py`` (``MemoryState``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import StateError, ValidationError
from lifelong.neural.memory.chunk_loop import chunk_loop
from lifelong.neural.memory.config import NeuralMemoryConfig
from lifelong.neural.memory.fused import ConvSiluNorm, GatedHeadNorm, RMSNormNoGain
from lifelong.neural.memory.ops import (
    ChunkCoefficients,
    apply_chunk,
    associative_backward,
    chunk_coefficients,
    memory_mlp,
)
from lifelong.neural.memory.state import MemoryState
from lifelong.neural.pretrained import PretrainedMixin

# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------


class NeuralMemory(PretrainedMixin, nn.Module):
    """Multi-head Titans long-term memory: ``forward(x, state) -> (y, state)``.

    x, y ∈ [B, T, dim]. ``retrieve`` and ``update`` are the two halves (the MAC
    variant calls them separately); ``forward`` interleaves them per chunk.
    ``save_pretrained(folder)`` / ``NeuralMemory.from_pretrained(folder)`` keep
    the outer-loop weights (config.json + model.safetensors).
    """

    config_class = NeuralMemoryConfig

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """A memory saved before ``update`` existed ran the paper's rule."""
        return config if "update" in config else {**config, "update": "paper", "value_norm": False}

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
        # Sequences may be at different positions (sessions batched by a server): the
        # memory only needs them at the same offset within a chunk.
        if not bool((state.position % cfg.chunk_size == state.pending).all()):
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
        return RMSNormNoGain.apply(x)

    def _project(self, x: Tensor, conv_cache: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """q, k, v ∈ [B, H, T, d] (SiLU, ℓ2-normalized q and k, and v where
        ``value_norm``), gate logits [B, H, T, 3],
        all from the RMS-normalized input."""
        cfg = self.config
        B, T, _ = x.shape
        H, K = cfg.heads, cfg.conv_kernel
        raw = self.to_qkv(x)  # [B, T, 3·H·d]
        # causal depthwise convolution, continued from the last K−1 inputs of the state
        if T >= K - 1:  # the state keeps the last K − 1 raw projections
            new_cache = raw[:, T - (K - 1):].clone()  # (clone: don't pin `raw`)
        else:
            new_cache = torch.cat([conv_cache[:, T:], raw], dim=1)
        q, k, v = ConvSiluNorm.apply(conv_cache, raw, self.conv, H, cfg.value_norm)
        gates = self.to_gates(x).view(B, T, 3, H).permute(0, 3, 1, 2)
        return q, k, v, gates, new_cache

    def _project_queries(self, x: Tensor, conv_cache: Tensor) -> Tensor:
        """q alone, as ``_project`` computes it: a read needs no keys, values or
        gates, so only the queries' third of the projection and convolution runs."""
        cfg = self.config
        inner = cfg.heads * cfg.head_dim
        raw = F.linear(x, self.to_qkv.weight[:inner])  # [B, T, H·d]
        (q,) = ConvSiluNorm.apply(conv_cache[..., :inner], raw, self.conv[:inner], cfg.heads,
                                  cfg.value_norm, 1)
        return q

    def _output(self, x: Tensor, y: Tensor) -> Tensor:
        """Normalize each head's retrieval, gate it by x, project back to dim."""
        z = GatedHeadNorm.apply(y, self.to_gate(x))
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
        coef = chunk_coefficients(
            logits[:, : n_full * b].reshape(N, n_full, b, 3), cfg,
            keys[:, : n_full * b].reshape(N, n_full, b, d) if cfg.update == "bounded" else None,
        )
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
                y_run, *WS = chunk_loop(save, *args)
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
            W, S = apply_chunk(W, S, factors, coef_chunks, n, use_momentum)

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
        q = self._project_queries(x, state.conv)
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
