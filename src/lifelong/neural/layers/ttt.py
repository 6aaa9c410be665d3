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
        state = self.check_state(state, x)
        x = x + gated_mlp(self.dyn_norm(x), state.weights, "silu")
        return x + gated_mlp(self.norm(x), (self.gate, self.up, self.down), "silu")


# --------------------------------------------------------------------------- the inner loop


def _handles(block_state: list, outer: bool) -> list:
    """The block state with its dynamic weights ready for one inner gradient: as they are
    with outer gradients (each W_{i−1} is its own tensor, used by mini-batch i alone, so
    ∇ℓ_i reaches only that use), detached leaves in inference."""
    st = block_state[-1]
    ws = tuple(w if outer else w.detach().requires_grad_(True) for w in st.weights)
    return [*block_state[:-1], replace(st, weights=ws)]


def inner_update(states: list[TTTState], loss: Tensor, lr: float, clip: float, create: bool,
                 keep: bool) -> list[TTTState]:
    """The inner update for every learning block at once: W − η · clip(∇ℓ(W)), with the
    clip over one sequence's gradients of all blocks together (global norm ≤ ``clip``)."""
    flat = [w for s in states for w in s.weights]
    grads = torch.autograd.grad(loss, flat, create_graph=create, retain_graph=keep or create)
    if clip > 0:
        norm = sum(g.pow(2).flatten(1).sum(1) for g in grads).sqrt()  # [B]
        scale = clip / torch.clamp(norm, min=clip)  # 1 below the threshold
    else:
        scale = torch.ones(flat[0].shape[0], dtype=flat[0].dtype, device=flat[0].device)
    scale = (lr * scale).to(flat[0].dtype)[:, None, None]
    out, i = [], 0
    for s in states:
        ws = tuple(w - scale * g for w, g in zip(s.weights, grads[i : i + 3]))
        i += 3
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

        def run(h: Tensor, states: list) -> tuple[Tensor, list]:
            after = []
            for blk, s in zip(learners, states):
                h, s = blk(h, s)
                after.append(s)
            return model.head(model.norm(h)), after

        outs = []
        for i in range(cut // b):
            h = h_closed[:, i * b : (i + 1) * b]
            with torch.enable_grad():
                back = [_handles(s, outer) for s in back]
                logits, after = run(h, back)  # mini-batch i, predicted with W_{i−1}
                flat = logits.flatten(0, 1)
                flat = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
                targets = ids[:, i * b + 1 : (i + 1) * b + 1].flatten()
                loss = F.cross_entropy(flat, targets, reduction="sum") / b  # Σ over sequences of ℓ_i
                new = inner_update([s[-1] for s in after], loss, c.ttt_lr, c.ttt_clip,
                                   create=outer, keep=outer)
                back = [[*s[:-1], n] for s, n in zip(after, new)]
            if not outer:
                logits, back = logits.detach(), map_tensors(back, lambda t: t.detach())
            outs.append(logits)
        if h_open.shape[1]:
            logits, _ = run(h_open, back)
            outs.append(logits.detach() if not outer else logits)
    if outs:
        logits = torch.cat(outs, dim=1)[:, n_old:]
    else:
        logits = model.head(model.norm(x))[:, :0]
    return logits, TTTModelState(blocks=[*front, *back], open_ids=ids[:, cut:], fingerprint=fp)
