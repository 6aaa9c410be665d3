"""Titans (Behrouz, Zhong, Mirrokni, arXiv 2501.00663, §4): three ways to join the
neural long-term memory (``lifelong.neural.memory``) with attention, plus the
memory alone. Each is a sequence mixer, ``layer(x, state) -> (y, state)``, placed
in the shared LM shell (``lifelong.neural.lm``).

- **LMM** (``MemoryLayer``): the memory is the whole sequence mixer.
- **MAC**, memory as context (``MACLayer``): the sequence is cut into segments.
  For segment S_t, the queries read the memory as it was before the segment
  (h_t = M*_{t-1}(q_t)); attention runs over [persistent tokens | h_t | S_t];
  its output y_t is written into the memory, and the final output is y_t gated
  by the memory's read of y_t. Attention never crosses a segment: everything
  older reaches the segment through the memory.
- **MAG**, memory as gate (``MAGLayer``): sliding-window attention (with
  persistent tokens every query sees) and the memory read the same input in
  parallel; the outputs are normalized by learned vectors and combined by a gate.
- **MAL**, memory as layer: a ``MemoryLayer`` followed by sliding-window
  attention with persistent tokens, as two sublayers of a block (see ``lm.py``).

Causality inside a segment: ``NeuralMemory.forward`` is chunk-causal (a position
reads the weights written by earlier chunks only), so writing y_t and reading it
back never lets a token see its successors. The paper writes o_t = y_t ⊗ M*_t(y_t)
with M_t the memory after the whole segment; reading chunk-causally is the
causal form of that for language modelling.

Persistent tokens in MAG/MAL are keys/values every query attends to (attention
sinks outside the window) rather than tokens literally prepended to the stream,
so they stay visible however far a stream runs; the memory branch starts from
its learned initial weights, which play the role of the prefix for the memory.

Every layer here has ``writes`` (default True). With ``writes = False`` the memory
is read but never written: each position reads the weights the state holds, and
the state keeps them (its convolution context and position still advance, so a
stream stays aligned). That is the ablation "the same model without its
long-term memory": anything the output knows beyond attention's reach came
through the memory's writes (``CausalLM.memory_writes`` sets it for a model).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.neural.attention import Attention
from lifelong.neural.config import ModelConfig
from lifelong.neural.memory import NeuralMemory, NeuralMemoryConfig

# The memory's own default bound on θ (``memory.stable_max_lr``) is sized for an
# untrained memory with its initial gates. Training moves the gates: θ towards its
# bound and η up to ≈ 0.99 (seen in MAC), which multiplies the effective inner step,
# so the models keep a tighter cap: θ ≤ min(MAX_STABLE_LR, STABLE_LR_PER_CHUNK / b)
# kept every tried shape (head width 8-32, chunks 2-32) finite over 4k-8k-token
# random streams at the largest θ; 0.01 at chunk 4 did not. And η is bounded by
# MAX_MOMENTUM: a MAC trained on 256-token MQAR sequences with η ∈ (0, 1) learned
# η ≈ 0.98 and θ at its cap, and its memory overflowed at 900 tokens; η < 0.9
# bounds the momentum's amplification of a step at 10×. The models keep the
# paper's update rule (``update = "paper"``) unless ``memory_options`` asks for
# another; the caps apply to the paper's rule only (``update = "bounded"`` bounds
# its own step: see ``memory.ops.chunk_coefficients``).
MAX_STABLE_LR = 0.005
STABLE_LR_PER_CHUNK = 0.04
MAX_MOMENTUM = 0.9


def memory_config(config: ModelConfig) -> NeuralMemoryConfig:
    """The neural memory of a model: one memory head per attention head."""
    options: dict[str, Any] = {
        "dim": config.dim,
        "heads": config.n_heads,
        "head_dim": config.dim // config.n_heads,
        "depth": config.memory_depth,
        "chunk_size": config.memory_chunk,
        "update": "paper",
    }
    options.update(config.memory_options)
    if options["update"] == "paper":  # the caps above are for the paper's rule
        options.setdefault("max_lr", min(MAX_STABLE_LR, STABLE_LR_PER_CHUNK / config.memory_chunk))
        options.setdefault("max_momentum", MAX_MOMENTUM)
    return NeuralMemoryConfig(**options)


def read_only(memory: NeuralMemory, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """``memory(x, state)`` without the writes: every position reads the state's weights,
    and the new state has the old weights and momentum (its convolution context,
    position and pending chunk advance as in a write, so writing can resume)."""
    state = state if state is not None else memory.init_state(x.shape[0])
    y = memory.retrieve(x, state)
    advanced = memory.update(x, state)
    return y, replace(advanced, weights=state.weights, momentum=state.momentum)


class Gate(nn.Module):
    """o = W_o (norm_a(a) * sigmoid(norm_b(b))): learned per-channel scales, then a sigmoid gate."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_a = nn.RMSNorm(dim)
        self.norm_b = nn.RMSNorm(dim)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.out(self.norm_a(a) * torch.sigmoid(self.norm_b(b)))


class MemoryLayer(nn.Module):
    """LMM: the neural memory as a sequence mixer (also the first sublayer of MAL)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.memory = NeuralMemory(memory_config(config))
        self.writes = True

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        return self.memory(x, state) if self.writes else read_only(self.memory, x, state)


class MAGLayer(nn.Module):
    """Memory as gate: sliding-window attention ‖ neural memory, combined by a gate."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.attn = Attention(c.dim, c.n_heads, c.window, c.n_persistent, c.rope_base)
        self.memory = NeuralMemory(memory_config(c))
        self.gate = Gate(c.dim)
        self.writes = True

    def forward(self, x: Tensor, state: dict[str, Any] | None = None) -> tuple[Tensor, dict]:
        state = state or {}
        y, attn_state = self.attn(x, state.get("attn"))
        if self.writes:
            m, mem_state = self.memory(x, state.get("memory"))
        else:
            m, mem_state = read_only(self.memory, x, state.get("memory"))
        return self.gate(y, m), {"attn": attn_state, "memory": mem_state}


class MACLayer(nn.Module):
    """Memory as context, segment by segment.

    State: the memory as it was at the start of the current segment, the inputs
    of that segment seen so far, and the last ``conv_kernel − 1`` inputs before
    it. A call that ends mid-segment keeps the partial segment and recomputes it
    from the segment-start memory when more tokens arrive (each segment's outputs
    depend only on its own prefix), so any split of a sequence into calls gives
    the outputs of one call, and the carried state never grows beyond one segment.

    Two streams pass through the memory: the inputs x, whose queries read it
    (Eq. 21), and the attention outputs y, which are written and read back
    (Eqs. 24–25). The memory's causal convolution runs over each stream on its
    own: the memory state carries the written stream's context, and the queries'
    context is the segment's preceding inputs (``tail``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.segment_len = c.segment_len
        self.attn = Attention(c.dim, c.n_heads, None, c.n_persistent, c.rope_base)
        self.memory = NeuralMemory(memory_config(c))
        self.gate = Gate(c.dim)
        self.writes = True

    def _read(self, x: Tensor, tail: Tensor | None, mem: Any) -> Tensor:
        """h = M*(q): the segment's queries, convolved over the input stream (the last
        inputs before the segment, then the segment), read with the memory ``mem``."""
        if mem is None:  # the stream starts here: nothing precedes the segment
            return self.memory.retrieve(x)
        xx = x if tail is None else torch.cat([tail, x], dim=1)
        # the convolution's context is in ``tail``, not in the written stream's state
        h = self.memory.retrieve(xx, replace(mem, conv=torch.zeros_like(mem.conv)))
        return h[:, xx.shape[1] - x.shape[1]:]

    def _segment(self, x: Tensor, tail: Tensor | None, mem: Any) -> tuple[Tensor, Any]:
        h = self._read(x, tail, mem)  # what the past says about these queries (Eq. 21)
        y, _ = self.attn(x, aligned=h)  # [persistent | h | segment], causal (Eqs. 22–23)
        # write the attention output; read it back (Eqs. 24–25)
        m, mem = self.memory(y, mem) if self.writes else read_only(self.memory, y, mem)
        return self.gate(y, m), mem

    def forward(self, x: Tensor, state: dict[str, Any] | None = None) -> tuple[Tensor, dict]:
        state = state or {}
        mem, tail = state.get("memory"), state.get("tail")
        buffered = state.get("partial")
        n_old = 0 if buffered is None else buffered.shape[1]
        xx = x if buffered is None else torch.cat([buffered, x], dim=1)
        keep = self.memory.config.conv_kernel - 1
        outs = []
        partial = None
        for s in range(0, xx.shape[1], self.segment_len):
            seg = xx[:, s : s + self.segment_len]
            o, new_mem = self._segment(seg, tail, mem)
            outs.append(o)
            if seg.shape[1] == self.segment_len:
                mem = new_mem
                if keep:
                    recent = seg if tail is None else torch.cat([tail, seg], dim=1)
                    tail = recent[:, max(0, recent.shape[1] - keep):]
            else:
                partial = seg
        y = torch.cat(outs, dim=1)[:, n_old:]
        return y, {"memory": mem, "partial": partial, "tail": tail}
