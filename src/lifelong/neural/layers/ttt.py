"""E2E-TTT: a sliding-window Transformer whose last blocks keep training on the context.

End-to-End Test-Time Training for Long Context (Tandon, Dalal, …, Sun; arXiv 2512.23675).
The backbone is sliding-window attention (QK-norm, RoPE, window k ≥ b). Each of the
last quarter of the blocks holds two MLPs, the residual stream passing through both:

    x ← x + MLP_dyn(norm'(x); W)      the dynamic MLP: the context, learned at test time
    x ← x + MLP(norm(x))              the static MLP: what pre-training taught

Only the dynamic MLPs' weights W move at test time; embeddings, norms, attention and
the static MLPs stay fixed. The sequence is read in mini-batches of b tokens. Each
mini-batch is first predicted with the current weights, then used to train them —
one SGD step on its own next-token loss (the inner loop):

    ℓ_i(W) = (1/b) Σ_{t ∈ batch i} CE(f(x_{≤t}; W), x_{t+1})             (inner loss)
    W_i    = W_{i−1} − η · clip(∇ℓ_i(W_{i−1}))                            (inner update)

where clip rescales the gradient of all the dynamic MLPs of one sequence together to
global norm at most ``ttt_clip``. The outer loss is the loss of every token under the
weights it was predicted with,

    L(W_0) = (1/T) Σ_i Σ_{t ∈ batch i} CE(f(x_{≤t}; W_{i−1}), x_{t+1})   (outer loss)

and training differentiates it through the inner updates (gradients of gradients), so
W_0 — the dynamic MLPs' initial weights — is meta-learned to be a good start for
learning at test time. Attention's keys and values of earlier mini-batches are kept
as they were computed (with the weights of their time): the inner gradient of batch i
treats them as data, as the paper's cached sliding window does.

The blocks before the first learning block never depend on W, so they read each call's
tokens in one pass; the learning blocks then step through the mini-batches. A
mini-batch's loss needs the token after it, so the last mini-batch of a call stays
open: the state (``TTTModelState``) holds every block's state at that mini-batch's
start plus its tokens, which the next call reads again — one pass equals any split.

Ablations (``ModelConfig.ttt_mode``): ``e2e`` (the method), ``dynamic_eval`` (trained
with the inner loop off, inner loop on in eval mode: dynamic evaluation without
meta-learning), ``off`` (the same SWA model, no inner loop).
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import StateError
from lifelong.neural.layers.cms import gated_mlp
from lifelong.neural.streaming import StateBundle, check_owned, map_tensors


@dataclass
class TTTState(StateBundle):
    """One learning block's dynamic MLP, one row per sequence: ``weights`` (gate, up,
    down) ``[B, dim, hidden]``, ``[B, dim, hidden]``, ``[B, hidden, dim]``; ``updates [B]``
    counts the inner steps taken."""

    weights: tuple[Tensor, Tensor, Tensor]
    updates: Tensor
    fingerprint: str = ""

    FORMAT_NAME = "lifelong.neural.TTTState"


@dataclass
class TTTModelState(StateBundle):
    """A ``ttt`` model's state: every block's state at the start of the open mini-batch
    (attention caches; ``TTTState`` last in each learning block) and ``open_ids [B, P]``,
    that mini-batch's tokens so far."""

    blocks: list
    open_ids: Tensor
    fingerprint: str = ""

    FORMAT_NAME = "lifelong.neural.TTTModelState"


def _linear_init(w: Tensor, fan_in: int) -> None:
    bound = 1 / math.sqrt(fan_in)  # nn.Linear's default range
    nn.init.uniform_(w, -bound, bound)


class TTTFeedForward(nn.Module):
    """The feed-forward part of a learning block: ``x + MLP_dyn(norm'(x); W) `` then
    ``+ MLP(norm(·))`` (residuals and pre-norms inside). ``gate0, up0, down0`` are W_0,
    the meta-learned initial weights of the dynamic MLP; the static MLP is ``gate, up, down``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.dyn_norm = nn.RMSNorm(dim)
        self.norm = nn.RMSNorm(dim)
        self.gate0 = nn.Parameter(torch.empty(dim, hidden))
        self.up0 = nn.Parameter(torch.empty(dim, hidden))
        self.down0 = nn.Parameter(torch.empty(hidden, dim))
        self.gate = nn.Parameter(torch.empty(dim, hidden))
        self.up = nn.Parameter(torch.empty(dim, hidden))
        self.down = nn.Parameter(torch.empty(hidden, dim))
        with torch.no_grad():
            for w in (self.gate0, self.up0, self.gate, self.up):
                _linear_init(w, dim)
            for w in (self.down0, self.down):
                _linear_init(w, hidden)

    def state_fingerprint(self) -> str:
        return hashlib.sha256(f"ttt:{self.dim}:{self.hidden}".encode()).hexdigest()[:16]

    def init_state(self, batch_size: int) -> TTTState:
        """Every sequence starts from W_0 (views: the outer gradient reaches the parameters)."""
        ws = tuple(w.unsqueeze(0).expand(batch_size, *w.shape) for w in (self.gate0, self.up0, self.down0))
        return TTTState(weights=ws, updates=torch.zeros(batch_size, dtype=torch.long, device=self.gate0.device),
                        fingerprint=self.state_fingerprint())

    def check_state(self, state: TTTState | None, x: Tensor) -> TTTState:
        if state is None:
            return self.init_state(x.shape[0])
        check_owned(state, TTTState, self.state_fingerprint(), x.shape[0], "TTT block")
        return state

    def forward(self, x: Tensor, state: TTTState | None = None) -> Tensor:
        return self.forward_saving(x, self.check_state(state, x))[0]

    def forward_saving(self, x: Tensor, state: TTTState, track: bool = False
                       ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The output and the dynamic MLP's activations ``(z, a, u, s, y)``: its input
        ``z = norm'(x)``, ``a = z W_gate``, ``u = z W_up``, ``s = silu(a) ⊙ u`` and its
        output ``y = s W_down`` (what ``grad_factors`` needs). ``track``: ``y`` is made to
        require grad, so the inner loss can be differentiated with respect to it."""
        gate, up, down = state.weights
        z = self.dyn_norm(x)
        a, u = z @ gate, z @ up
        s = F.silu(a) * u
        y = s @ down
        if track and not y.requires_grad:
            y.requires_grad_(True)
        x = x + y
        return x + gated_mlp(self.norm(x), (self.gate, self.up, self.down), "silu"), (z, a, u, s, y)


# --------------------------------------------------------------------------- the inner loop


def grad_factors(z: Tensor, a: Tensor, up: Tensor, hidden: Tensor, down: Tensor, dy: Tensor
                 ) -> tuple[tuple[Tensor, Tensor], ...]:
    """The inner gradient of one dynamic MLP over a mini-batch, in closed form.

    Forward (per sequence, ``[B, b, ·]``): a = z W_gate, u = z W_up, s = silu(a) ⊙ u,
    y = s W_down. Given dy = ∂ℓ/∂y (``[B, b, dim]``), the backward is

        ∇W_down = sᵀ dy,   ds = dy W_downᵀ,   du = ds ⊙ silu(a),
        da = ds ⊙ u ⊙ σ(a)(1 + a(1 − σ(a))),   ∇W_gate = zᵀ da,   ∇W_up = zᵀ du.

    Each gradient is returned as its two factors ``(L, R)`` with ∇W = Lᵀ R (a sum of b
    outer products), never as a ``[B, in, out]`` tensor: the clip norm is then taken from
    ``[B, b, b]`` Gram matrices and the update is one ``baddbmm`` per weight. Plain
    differentiable tensor algebra: with ``dy`` from a ``create_graph`` gradient, the
    outer loss differentiates through it (second order)."""
    ds = dy @ down.transpose(1, 2)
    sig = torch.sigmoid(a)
    du = ds * (a * sig)
    da = ds * up * (sig * (1 + a * (1 - sig)))
    return (z, da), (z, du), (hidden, dy)


def factor_sq_norm(left: Tensor, right: Tensor) -> Tensor:
    """‖Lᵀ R‖²_F per sequence ``[B]``, as Σ (L Lᵀ) ⊙ (R Rᵀ): ``[B, b, b]`` Grams instead of
    the ``[B, in, out]`` gradient."""
    return ((left @ left.transpose(1, 2)) * (right @ right.transpose(1, 2))).flatten(1).sum(1)


def inner_update(states: list[TTTState], factors: list[tuple[tuple[Tensor, Tensor], ...]], lr: float,
                 clip: float) -> list[TTTState]:
    """The inner update for every learning block at once: W − η · clip(∇ℓ(W)), with the
    clip over one sequence's gradients of all blocks together (global norm ≤ ``clip``);
    ``factors[k]`` are block k's gradient factors (``grad_factors``)."""
    w0 = states[0].weights[0]
    with torch.autocast(w0.device.type, enabled=False):  # the state keeps its dtype
        fs = [[(lf.to(w0.dtype), rf.to(w0.dtype)) for lf, rf in f] for f in factors]
        if clip > 0:
            norm = sum(factor_sq_norm(lf, rf) for f in fs for lf, rf in f).sqrt()  # [B]
            scale = clip / torch.clamp(norm, min=clip)  # 1 below the threshold
        else:
            scale = torch.ones(w0.shape[0], dtype=w0.dtype, device=w0.device)
        step = (-lr * scale).to(w0.dtype)[:, None, None]
        out = []
        for s, f in zip(states, fs):
            ws = tuple(torch.baddbmm(w, lf.transpose(1, 2), rf * step) for w, (lf, rf) in zip(s.weights, f))
            out.append(replace(s, weights=ws, updates=s.updates + 1))
    return out


def forward(model: Any, input_ids: Tensor, state: TTTModelState | None) -> tuple[Tensor, TTTModelState]:
    """The ``ttt`` model with its inner loop on (``model`` is the LM shell: ``embed``,
    ``blocks``, ``norm``, ``head``, ``config``, ``fingerprint()``).

    With gradients enabled the inner gradients keep their graph, so a backward of the
    outer loss differentiates through every inner update (E2E); otherwise each step's
    weights are detached (inference, constant memory)."""
    c = model.config
    b, n_front = c.ttt_mini_batch, c.n_layers - c.ttt_suffix
    B = input_ids.shape[0]
    fp = model.fingerprint()
    if state is None:
        blocks: list = [None] * c.n_layers
        open_ids = input_ids[:, :0]
    else:
        if not isinstance(state, TTTModelState) or state.fingerprint != fp:
            raise StateError("this state does not belong to this model",
                             hint="pass the state this model returned, or None")
        if state.batch_size != B:
            raise StateError(f"state has batch {state.batch_size}, the input {B}",
                             hint="TTTModelState.stack / .index the states to match the batch")
        blocks, open_ids = list(state.blocks), state.open_ids.to(input_ids.device)
    ids = torch.cat([open_ids, input_ids], dim=1)
    n_old, T = open_ids.shape[1], ids.shape[1]
    cut = (max(T - 1, 0) // b) * b  # tokens of the mini-batches whose next token is known
    outer = torch.is_grad_enabled()
    if outer:  # second derivatives through attention need the math kernel
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel: Any = sdpa_kernel(SDPBackend.MATH)
    else:
        kernel = nullcontext()
    with kernel:
        x = model.embed(ids)
        # the blocks before the learning ones: the closed mini-batches in one pass (their
        # states are the state at the open mini-batch's start), then the open tail
        front = blocks[:n_front]
        h_closed, h_open = x[:, :cut], x[:, cut:]
        for j in range(n_front):
            if cut:
                h_closed, front[j] = model.blocks[j](h_closed, front[j])
            if h_open.shape[1]:
                h_open, _ = model.blocks[j](h_open, front[j])
        learners = model.blocks[n_front:]
        back = []
        for blk, s in zip(learners, blocks[n_front:]):
            s = list(s) if s else [None] * (len(blk.mixers) + 1)
            s[-1] = blk.mlp.check_state(s[-1], ids)
            back.append(s)

        def run(h: Tensor, states: list, track: bool) -> tuple[Tensor, list, list]:
            after, saved = [], []
            for blk, s in zip(learners, states):  # Block.forward, keeping the FFN's activations
                new = []
                for norm, mixer, st in zip(blk.mixer_norms, blk.mixers, s[:-1]):
                    y, st = mixer(norm(h), st)
                    h = h + y
                    new.append(st)
                h, acts = blk.mlp.forward_saving(h, s[-1], track)
                after.append([*new, s[-1]])
                saved.append(acts)
            return model.head(model.norm(h)), after, saved

        outs = []
        for i in range(cut // b):
            h = h_closed[:, i * b : (i + 1) * b]
            with torch.enable_grad():
                logits, after, saved = run(h, back, True)  # mini-batch i, predicted with W_{i−1}
                flat = logits.flatten(0, 1)
                flat = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
                targets = ids[:, i * b + 1 : (i + 1) * b + 1].flatten()
                loss = F.cross_entropy(flat, targets, reduction="sum") / b  # Σ over sequences of ℓ_i
                # ∂ℓ_i/∂y for every dynamic MLP's output y (autograd through the blocks above),
                # then each MLP's weight gradient in closed form (grad_factors)
                dys = torch.autograd.grad(loss, [acts[-1] for acts in saved], create_graph=outer)
                factors = [grad_factors(z, a, u, hid, st[-1].weights[2], dy)
                           for (z, a, u, hid, _), st, dy in zip(saved, after, dys)]
                new = inner_update([s[-1] for s in after], factors, c.ttt_lr, c.ttt_clip)
                back = [[*s[:-1], n] for s, n in zip(after, new)]
            if not outer:
                logits, back = logits.detach(), map_tensors(back, lambda t: t.detach())
            outs.append(logits)
        if h_open.shape[1]:
            logits, _, _ = run(h_open, back, False)
            outs.append(logits.detach() if not outer else logits)
    if outs:
        logits = torch.cat(outs, dim=1)[:, n_old:]
    else:
        logits = model.head(model.norm(x))[:, :0]
    return logits, TTTModelState(blocks=[*front, *back], open_ids=ids[:, cut:], fingerprint=fp)
