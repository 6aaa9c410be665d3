"""Titans models (MAC, MAG, MAL, LMM) and Hope against their equations, in float64.

The references below are written plainly, segment by segment and query by query,
from the layers' own parameters. The neural memory enters them through its three
operations, each held to its own float64 reference in ``test_memory.py``:

    read        M*(q)                ``memory.retrieve(x, state)``  (no write)
    write       M_t = M_{t−1}(y)     ``memory.update(y, state)``
    read+write  chunk-causal         ``memory(y, state)``: each position reads the
                                     weights written by the chunks before its own

so a test here fails when the way a model *composes* the memory with attention
is wrong: what is read, what is written, what is gated, what is carried.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.neural.attention import Attention
from lifelong.neural.config import MODEL_KINDS
from lifelong.neural.layers.titans import Gate, MACLayer, MAGLayer, MemoryLayer
from lifelong.neural.lm import build_model
from lifelong.neural.memory import NeuralMemory

from .test_models import tiny  # the same tiny configs as the shell tests

TOL = dict(rtol=1e-10, atol=1e-10)


# --- plain pieces --------------------------------------------------------------------


def rms_norm(x: Tensor, norm: torch.nn.RMSNorm) -> Tensor:
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


def rotate(x: Tensor, pos: int, base: float) -> Tensor:
    """RoPE of one vector x [..., D] at position ``pos``: channel i pairs with i + D/2."""
    half = x.shape[-1] // 2
    angle = pos * base ** (-torch.arange(half, dtype=x.dtype) / half)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()], dim=-1)


def plain_attention(attn: Attention, x: Tensor, aligned: Tensor | None = None) -> Tensor:
    """softmax(q_i · K / √d) V, query by query, over [persistent | aligned_{≤i} | x_{window ≤ i}].

    Positions count from the start of ``x``; persistent tokens carry no position;
    ``aligned[j]`` (MAC's memory read h_j) sits at the position of x_j."""
    B, T, D = x.shape
    H, hd = attn.n_heads, attn.head_dim
    W_q, W_k, W_v = attn.qkv.weight.chunk(3, dim=0)

    def heads(z: Tensor) -> Tensor:  # [..., D] → [..., H, hd]
        return z.view(*z.shape[:-1], H, hd)

    q, k, v = heads(x @ W_q.T), heads(x @ W_k.T), heads(x @ W_v.T)
    out = torch.zeros(B, T, H, hd, dtype=x.dtype)
    for b in range(B):
        for i in range(T):
            keys, vals = [], []
            if attn.persistent is not None:
                for p in attn.persistent:
                    keys.append(heads(p @ W_k.T))
                    vals.append(heads(p @ W_v.T))
            if aligned is not None:
                for j in range(i + 1):
                    keys.append(rotate(heads(aligned[b, j] @ W_k.T), j, attn.rope_base))
                    vals.append(heads(aligned[b, j] @ W_v.T))
            lo = 0 if attn.window is None else max(0, i - attn.window + 1)
            for j in range(lo, i + 1):
                keys.append(rotate(k[b, j], j, attn.rope_base))
                vals.append(v[b, j])
            K, V = torch.stack(keys, dim=1), torch.stack(vals, dim=1)  # [H, n, hd]
            qi = rotate(q[b, i], i, attn.rope_base)  # [H, hd]
            scores = (K @ qi[:, :, None])[..., 0] / math.sqrt(hd)  # [H, n]
            out[b, i] = (scores.softmax(-1)[:, :, None] * V).sum(1)
    return out.reshape(B, T, D) @ attn.proj.weight.T


def plain_gate(gate: Gate, y: Tensor, m: Tensor) -> Tensor:
    """o = W_o (norm(y) ⊗ σ(norm(m))): y gated by the memory's read."""
    return (rms_norm(y, gate.norm_a) * torch.sigmoid(rms_norm(m, gate.norm_b))) @ gate.out.weight.T


def read_stream(memory: NeuralMemory, x: Tensor, state) -> Tensor:
    """M*(q_t) for every token of the input stream ``x`` (its convolution runs over this
    stream from its start), all read with the weights ``state`` holds."""
    fresh = replace(state, conv=torch.zeros_like(state.conv))
    return memory.retrieve(x, fresh)


# --- the references --------------------------------------------------------------------


def mac_reference(layer: MACLayer, x: Tensor) -> Tensor:
    """Titans MAC, Eqs. 21–25, one segment S_t = x[t·L:(t+1)·L] at a time."""
    L, mem = layer.segment_len, layer.memory
    state = mem.init_state(x.shape[0])  # M_0
    outs = []
    for s in range(0, x.shape[1], L):
        seg = x[:, s : s + L]
        # (21) h_t = M*_{t−1}(q_t): the segment's queries read the memory as it was before it
        h = read_stream(mem, x[:, : s + seg.shape[1]], state)[:, s:]
        # (22, 23) S̃ = [persistent ‖ h_t ‖ S_t], y_t = Attn(S̃) (causal)
        y = plain_attention(layer.attn, seg, aligned=h)
        # (24) M_t = M_{t−1}(y_t): write the attention output; (25) o_t = y_t ⊗ M*_t(y_t),
        # each position reading the memory written up to its own chunk (causal)
        m, written = mem(y, state)
        outs.append(plain_gate(layer.gate, y, m))
        if seg.shape[1] == L:  # M_t carries into the next segment
            state = written
    return torch.cat(outs, dim=1)


def mag_reference(layer: MAGLayer, x: Tensor) -> Tensor:
    """Titans MAG, Eqs. 26–28: y = SW-Attn*([persistent ‖ x]), o = y ⊗ M(x)."""
    y = plain_attention(layer.attn, x)
    m, _ = layer.memory(x, layer.memory.init_state(x.shape[0]))
    return plain_gate(layer.gate, y, m)


def mal_block_reference(block, x: Tensor) -> Tensor:
    """Titans MAL, Eqs. 29–31: y = M(x), o = SW-Attn([persistent ‖ y]); each a pre-norm
    residual sublayer, then the block's MLP."""
    memory_layer, swa = block.mixers
    assert isinstance(memory_layer, MemoryLayer) and isinstance(swa, Attention)
    m, _ = memory_layer.memory(rms_norm(x, block.mixer_norms[0]))
    x = x + m
    x = x + plain_attention(swa, rms_norm(x, block.mixer_norms[1]))
    h = rms_norm(x, block.mlp_norm)
    mlp = block.mlp
    return x + (F.silu(h @ mlp.w1.weight.T) * (h @ mlp.w3.weight.T)) @ mlp.w2.weight.T


def _layer_input(seed: int, t: int) -> Tensor:
    return torch.randn(2, t, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _trained_looking(module: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (gates, norms, persistent tokens), so
    no term of an equation hides behind an identity or a zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# --- the references against the layers ----------------------------------------------------


@pytest.mark.parametrize("segment_len,chunk", [(8, 4), (6, 4)])
def test_mac_layer_matches_equations_21_to_25(segment_len: int, chunk: int) -> None:
    torch.manual_seed(0)
    # a larger inner learning rate than the models' cap, so the memory's writes move
    # the output well above the tolerance
    layer = MACLayer(tiny("mac", segment_len=segment_len, memory_chunk=chunk,
                          memory_options={"max_lr": 0.05})).double()
    _trained_looking(layer, 1)
    x = _layer_input(2, 3 * segment_len + 3)  # three whole segments and a partial one
    y, _ = layer(x)
    torch.testing.assert_close(y, mac_reference(layer, x), **TOL)


def test_mag_layer_matches_equations_26_to_28() -> None:
    torch.manual_seed(0)
    layer = MAGLayer(tiny("mag", memory_options={"max_lr": 0.05})).double()
    _trained_looking(layer, 1)
    x = _layer_input(3, 21)
    y, _ = layer(x)
    torch.testing.assert_close(y, mag_reference(layer, x), **TOL)


def test_mal_block_matches_equations_29_to_31() -> None:
    torch.manual_seed(0)
    model = build_model(tiny("mal", memory_options={"max_lr": 0.05})).double()
    _trained_looking(model, 1)
    block = model.blocks[0]
    x = _layer_input(4, 21)
    y, _ = block(x)
    torch.testing.assert_close(y, mal_block_reference(block, x), **TOL)


# --- the memory matters -------------------------------------------------------------------

# Kinds whose sequence mixers hold a weight memory, and a position T − 1 far enough from
# token 1 that nothing but the memory's writes can carry it there: windows (8) and
# segments (8) over two layers, and the memory's convolutions (3 tokens back each).
MEMORY_KINDS = ("lmm", "mac", "mag", "mal", "hope")
LENGTH = 64


def _last_logits(model, ids: Tensor) -> Tensor:
    with torch.no_grad():
        return model(ids)[0][:, -1]


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_a_token_beyond_attention_reaches_the_output_only_through_the_memory(kind: str) -> None:
    assert set(MEMORY_KINDS) | {"transformer", "swa", "deltanet", "hope_attention", "ttt"} == set(MODEL_KINDS)
    torch.manual_seed(0)
    model = build_model(tiny(kind)).double().eval()
    ids = torch.randint(0, 40, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 1] = (ids[:, 1] + 7) % 40

    moved = (_last_logits(model, ids) - _last_logits(model, changed)).abs().max()
    assert moved > 1e-4, f"{kind}: a token {LENGTH - 2} positions back did not reach the output"

    model.memory_writes = False  # the same model, its memories read but never written
    model.in_context_updates = False  # Hope's CMS levels too
    assert not model.memory_writes
    torch.testing.assert_close(_last_logits(model, ids), _last_logits(model, changed), rtol=0, atol=1e-14)


def test_ttt_carries_a_token_beyond_its_window_only_through_its_inner_loop() -> None:
    # E2E-TTT's memory is its learning blocks' fast MLP weights: with the inner loop
    # off (ttt_mode="off", same parameters) the sliding windows alone cannot reach token 1.
    torch.manual_seed(0)
    learning = build_model(tiny("ttt", ttt_mini_batch=4, ttt_lr=0.5)).double().eval()
    frozen = build_model(tiny("ttt", ttt_mini_batch=4, ttt_lr=0.5, ttt_mode="off")).double().eval()
    frozen.load_state_dict(learning.state_dict())
    ids = torch.randint(0, 40, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 1] = (ids[:, 1] + 7) % 40
    moved = (_last_logits(learning, ids) - _last_logits(learning, changed)).abs().max()
    assert moved > 1e-4, f"a token {LENGTH - 2} positions back did not reach the output"
    torch.testing.assert_close(_last_logits(frozen, ids), _last_logits(frozen, changed), rtol=0, atol=1e-14)


def test_hope_carries_the_past_through_either_memory_alone() -> None:
    # The self-modifying Titans and the CMS each carry a token past every convolution.
    torch.manual_seed(0)
    model = build_model(tiny("hope")).double().eval()
    ids = torch.randint(0, 40, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 1] = (ids[:, 1] + 7) % 40
    for titans_writes, cms_writes in ((True, False), (False, True)):
        model.memory_writes, model.in_context_updates = titans_writes, cms_writes
        moved = (_last_logits(model, ids) - _last_logits(model, changed)).abs().max()
        assert moved > 1e-5, (titans_writes, cms_writes)


def test_hope_attention_output_depends_on_its_in_context_writes() -> None:
    # Global attention sees every token, so no token lies beyond its reach; what the
    # CMS adds is checked directly: its writes change the output after the first step
    # (4 tokens + the label) and not before.
    torch.manual_seed(0)
    model = build_model(tiny("hope_attention")).double().eval()
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        learning, _ = model(ids)
        model.in_context_updates = False
        frozen, _ = model(ids)
    torch.testing.assert_close(learning[:, :4], frozen[:, :4], rtol=0, atol=1e-14)
    assert (learning[:, -1] - frozen[:, -1]).abs().max() > 1e-4


def test_streaming_with_frozen_memory_equals_one_pass() -> None:
    # Frozen memories still advance their state (convolution, position), so a stream
    # split anywhere gives the outputs of one call.
    for kind in ("mac", "mag", "mal", "hope"):
        torch.manual_seed(1)
        model = build_model(tiny(kind)).double().eval()
        model.memory_writes = False
        model.in_context_updates = False
        ids = torch.randint(0, 40, (1, 27), generator=torch.Generator().manual_seed(2))
        full, _ = model(ids)
        cuts = [0, 3, 5, 13, 16, 27]
        streamed = torch.cat([lg for lg, _ in model.stream([ids[:, a:b] for a, b in zip(cuts, cuts[1:])])], 1)
        torch.testing.assert_close(streamed, full, rtol=1e-10, atol=1e-10)
