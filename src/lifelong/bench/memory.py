"""Speed of the neural memory: training and inference tokens/s, and streaming memory use.

``--compare paper`` / ``--compare bounded`` instead measures lifelong's memory
with that update rule as the peer (the speed of one rule against the other).

``lifelong bench memory --compare titans-pytorch`` runs lifelong's ``NeuralMemory``
and titans-pytorch's ``NeuralMemory`` in one process at the same configuration
and the same semantics (weights written every ``chunk`` tokens; titans-pytorch
``chunk_size = batch_size = chunk``), interleaving their repeats so that both see
the same machine load. A repeat's time is wall-clock; the ratios are medians of
back-to-back pairs (see ``summarize``), and the table shows best and median
tokens/s of each side.

Training = forward + backward of ``mean(y²)`` over a [batch, seq, dim] input.
Inference = forward under ``torch.no_grad``.

Streaming memory: for each length, a fresh process builds the memory, feeds the
sequence in pieces of ``stream_piece`` tokens carrying the state (no grad) and
reports its resident set size after the first piece and its peak (VmHWM, reset
after the first piece) over the rest: the growth must not depend on the length.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from lifelong.bench.models import sync
from lifelong.errors import StateError
from lifelong.neural.memory import MemoryState, NeuralMemory, NeuralMemoryConfig


@dataclass
class MemoryBenchConfig:
    dim: int = 256
    heads: int = 4
    head_dim: int = 64
    depth: int = 2
    expansion: float = 4.0
    chunk: int = 64
    batch: int = 4
    seq: int = 2048
    repeats: int = 5
    warmup: int = 1
    compare: str | None = "titans-pytorch"
    device: str = "cpu"
    dtype: str = "float32"
    memory_lengths: list[int] = field(default_factory=lambda: [2048, 8192, 32768])
    stream_piece: int = 512
    seed: int = 0
    update: str = "paper"  # titans-pytorch's rule, so the comparison is like for like

    def memory_config(self) -> NeuralMemoryConfig:
        return NeuralMemoryConfig(
            dim=self.dim, heads=self.heads, head_dim=self.head_dim, depth=self.depth,
            expansion=self.expansion, chunk_size=self.chunk, update=self.update,
        )


@dataclass
class Timing:
    train_s: list[float] = field(default_factory=list)
    infer_s: list[float] = field(default_factory=list)


# --- the two contenders ------------------------------------------------------------


def build_lifelong(cfg: MemoryBenchConfig) -> torch.nn.Module:
    return NeuralMemory(cfg.memory_config(), seed=cfg.seed)


def build_titans_pytorch(cfg: MemoryBenchConfig) -> torch.nn.Module:
    from titans_pytorch import NeuralMemory as PeerMemory

    # chunk_size: tokens sharing one gradient step's weights; batch_size: tokens
    # between weight updates. Both = chunk is the paper's chunked semantics.
    return PeerMemory(
        dim=cfg.dim, chunk_size=cfg.chunk, batch_size=cfg.chunk, dim_head=cfg.head_dim,
        heads=cfg.heads,
        default_model_kwargs=dict(depth=cfg.depth, expansion_factor=cfg.expansion),
    )


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _time_train(model: torch.nn.Module, x: torch.Tensor, device: str) -> float:
    model.zero_grad(set_to_none=True)
    sync(device)
    start = time.perf_counter()
    y, _ = model(x)
    y.float().square().mean().backward()
    sync(device)
    return time.perf_counter() - start


def _time_infer(model: torch.nn.Module, x: torch.Tensor, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    sync(device)
    return time.perf_counter() - start


def run_speed(
    cfg: MemoryBenchConfig, progress: Callable[[str], None] = lambda s: None
) -> dict[str, Timing]:
    """Interleaved repeats: train both contenders back to back, then infer both;
    who goes first alternates, so slow drifts in machine load hit both alike."""
    torch.manual_seed(cfg.seed)
    dtype = _dtype(cfg.dtype)
    models = {"lifelong": build_lifelong(cfg)}
    if cfg.compare == "titans-pytorch":
        models["titans-pytorch"] = build_titans_pytorch(cfg)
    elif cfg.compare in ("paper", "bounded"):  # lifelong with the other update rule
        other = replace(cfg.memory_config(), update=cfg.compare, max_lr=None, value_norm=None)
        models[cfg.compare] = NeuralMemory(other, seed=cfg.seed)
    for name in models:
        models[name] = models[name].to(device=cfg.device, dtype=dtype)
    x = torch.randn(cfg.batch, cfg.seq, cfg.dim, device=cfg.device, dtype=dtype)
    timings = {name: Timing() for name in models}
    for r in range(cfg.warmup + cfg.repeats):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        warm = r < cfg.warmup
        for kind, fn in (("train", _time_train), ("infer", _time_infer)):
            for name in order:
                seconds = fn(models[name], x, cfg.device)
                if not warm:
                    getattr(timings[name], f"{kind}_s").append(seconds)
                progress(f"repeat {r + 1 - cfg.warmup}/{cfg.repeats} {kind} {name}: "
                         f"{seconds:.2f}s" + (" (warm-up)" if warm else ""))
    return timings


# --- FLOPs: matmuls only, as the yardstick for "fraction of peak" -------------------


def forward_flops_per_token(cfg: MemoryBenchConfig) -> float:
    """Matmul FLOPs of one lifelong forward per token (training ≈ 3× this)."""
    mc = cfg.memory_config()
    inner = mc.heads * mc.head_dim
    proj = 2 * cfg.dim * (3 * inner + 3 * mc.heads + inner) + 2 * inner * cfg.dim
    shapes = mc.layer_shapes()
    p = sum(i * o for i, o in shapes)
    # read M(q) + write: forward M(k), backpropagate δ (not below layer 1), gradients
    per_head = 2 * p + 2 * p + 2 * (p - shapes[0][0] * shapes[0][1]) + 2 * p
    return float(proj + mc.heads * per_head)


def matmul_peak_flops(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 20) -> float:
    """Measured FLOP/s of a square matmul on this device (best of ``repeats``): the
    practical peak. On a machine shared with other jobs it is a lower bound."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# --- streaming memory: flat in the length ---------------------------------------------


def _rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f"{field} not in /proc/self/status")


def _stream_worker(cfg: MemoryBenchConfig, length: int, out: mp.Queue) -> None:
    torch.manual_seed(cfg.seed)
    model = build_lifelong(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = None
    base = 0.0
    with torch.no_grad():
        for i, lo in enumerate(range(0, length, cfg.stream_piece)):
            n = min(cfg.stream_piece, length - lo)
            _, state = model(torch.randn(cfg.batch, n, cfg.dim, generator=gen), state)
            if i == 0:
                # reset the high-water mark to the current RSS ("5" → clear_refs),
                # so the peak below covers the rest of the stream only
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                base = _rss_mib("VmRSS")
    out.put((base, _rss_mib("VmHWM")))


def run_stream_memory(cfg: MemoryBenchConfig) -> list[tuple[int, float, float]]:
    """(length, RSS MiB after the first piece, peak RSS MiB over the rest) per length.

    Each length runs in a fresh process (Linux /proc accounting), so the peaks of
    the speed runs above do not leak into it.
    """
    ctx = mp.get_context("spawn")
    rows = []
    for length in cfg.memory_lengths:
        q = ctx.Queue()
        p = ctx.Process(target=_stream_worker, args=(cfg, length, q))
        p.start()
        base, peak = q.get()
        p.join()
        rows.append((length, base, peak))
    return rows


def summarize(cfg: MemoryBenchConfig, timings: dict[str, Timing]) -> dict[str, float]:
    """Tokens/s (best and median repeat) and the ratios.

    The ratio is the median over repeats of peer time / lifelong time, each pair
    measured back to back: on a machine shared with other jobs this compares
    like with like, where best-vs-best would pit one side's luckiest moment
    against the other's. The best-repeat ratio is reported beside it.
    """
    tokens = cfg.batch * cfg.seq
    ours = timings["lifelong"]
    result = {
        "train_tok_s": tokens / min(ours.train_s),
        "infer_tok_s": tokens / min(ours.infer_s),
        "train_tok_s_median": tokens / statistics.median(ours.train_s),
        "infer_tok_s_median": tokens / statistics.median(ours.infer_s),
    }
    peer = next((t for name, t in timings.items() if name != "lifelong"), None)
    if peer is not None:
        result.update(
            peer_train_tok_s=tokens / min(peer.train_s),
            peer_infer_tok_s=tokens / min(peer.infer_s),
            peer_train_tok_s_median=tokens / statistics.median(peer.train_s),
            peer_infer_tok_s_median=tokens / statistics.median(peer.infer_s),
        )
        for kind in ("train", "infer"):
            pairs = [p / o for p, o in zip(getattr(peer, f"{kind}_s"), getattr(ours, f"{kind}_s"))]
            result[f"{kind}_ratio"] = statistics.median(pairs)
            result[f"{kind}_ratio_best"] = result[f"{kind}_tok_s"] / result[f"peer_{kind}_tok_s"]
            result[f"{kind}_ratio_min"], result[f"{kind}_ratio_max"] = min(pairs), max(pairs)
    return result


# --- capacity: how much one write stores, and how long the memory stays finite -------
#
# ``lifelong bench memory --capacity``. A memory of one head (width ``head_dim``)
# writes N random unit key → unit value pairs once, through ``write_associations``
# (so the projections play no part): θ at its bound (gate logit +40), no forgetting
# (α logit −40), η at the config's initial value (≈ 0.9). Chunk sizes larger than
# N are filled with zero keys and values, which change nothing (M(0) = 0 for a
# bias-free MLP, so their gradient is zero, and the Gram bound has a floor of 1).
# Then ``drain`` chunks of nothing let the momentum run out, as a stream would.
# The retrieval error is the associative loss ℓ = mean_i ‖M(k_i) − v_i‖²; the
# figure is the fraction of it the write removed, 1 − ℓ_after / ℓ_before, the mean
# over ``trials`` draws of keys, values and initial weights.
#
# Beside it, the longest stream that stays finite: the whole memory at its default
# configuration (or the one given), fed random input of RMS ``stream_scale`` in
# pieces of ``stream_piece`` tokens, until ``stream_tokens`` or the first overflow
# (``StateError``) or non-finite output. Gates "init": as initialized; "stress":
# θ at its bound and no forgetting (init_lr_logit +10, init_forget_logit −10),
# what a trained model may drive them to.

SATURATED = 40.0


@dataclass
class CapacityConfig:
    pairs: int = 16
    depths: list[int] = field(default_factory=lambda: [1, 2])
    chunks: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    updates: list[str] = field(default_factory=lambda: ["bounded", "paper"])
    max_lr: float | None = None  # None: each rule's default bound
    dim: int = 256  # the streaming check's model width (the probe writes below the projections)
    heads: int = 4
    head_dim: int = 64
    expansion: float = 4.0
    drain: int = 30
    trials: int = 8
    stream_tokens: int = 32768
    stream_scale: float = 10.0
    stream_piece: int = 1024
    stream_gates: list[str] = field(default_factory=lambda: ["init", "stress"])
    value_norm: bool | None = None  # None: the rule's default
    gates: str = "chunk"  # NeuralMemoryConfig.gates
    seed: int = 0

    def memory_config(self, update: str, depth: int, chunk: int, heads: int | None = None,
                      **extra: float) -> NeuralMemoryConfig:
        return NeuralMemoryConfig(
            dim=self.dim, heads=heads or self.heads, head_dim=self.head_dim, depth=depth,
            expansion=self.expansion, chunk_size=chunk, update=update, max_lr=self.max_lr,
            value_norm=self.value_norm, gates=self.gates, **extra,
        )


def _unit(gen: torch.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.randn(1, 1, n, d, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def write_once_removed(cfg: CapacityConfig, update: str, depth: int, chunk: int) -> tuple[float, float]:
    """(mean, min over trials) of the fraction of ℓ removed by one write of
    ``cfg.pairs`` pairs, after ``cfg.drain`` chunks of momentum."""
    mc = cfg.memory_config(update, depth, chunk, heads=1)
    n, d = cfg.pairs, cfg.head_dim
    padded = -(-n // chunk) * chunk
    fractions = []
    for trial in range(cfg.trials):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + trial)
        m = NeuralMemory(mc, seed=cfg.seed * 1000 + trial).double()
        k, v = _unit(gen, n, d), _unit(gen, n, d)
        keys = torch.zeros(1, 1, padded, d, dtype=torch.float64)
        vals = torch.zeros_like(keys)
        keys[..., :n, :], vals[..., :n, :] = k, v
        gates = torch.empty(1, 1, padded, 3, dtype=torch.float64)
        gates[..., 0] = -SATURATED  # θ ≈ 0 on the padding
        gates[..., :n, 0] = SATURATED  # θ = max_lr on the pairs
        gates[..., 1] = -SATURATED  # α ≈ 0
        gates[..., 2] = mc.init_momentum_logit  # η as initialized (≈ 0.9)
        drain_gates = gates[..., :1, :].expand(1, 1, cfg.drain * chunk, 3).clone()
        drain_gates[..., 0] = -SATURATED
        nothing = torch.zeros(1, 1, cfg.drain * chunk, d, dtype=torch.float64)

        def loss(state: MemoryState) -> float:
            return float((m.read_associations(k, state) - v).pow(2).sum(-1).mean())

        with torch.no_grad():
            state = m.init_state(1)
            before = loss(state)
            state = m.write_associations(keys, vals, gates, state)
            state = m.write_associations(nothing, nothing.clone(), drain_gates, state)
            after = loss(state)
        fractions.append(1.0 - after / before if math.isfinite(after) else float("-inf"))
    return statistics.fmean(fractions), min(fractions)


def longest_finite_stream(cfg: CapacityConfig, update: str, depth: int, chunk: int, gates: str) -> int:
    """Tokens of random input (RMS ``stream_scale``) the memory took before its weights
    overflowed or its output went non-finite; ``stream_tokens`` if it never did."""
    extra = {"init_lr_logit": 10.0, "init_forget_logit": -10.0} if gates == "stress" else {}
    m = NeuralMemory(cfg.memory_config(update, depth, chunk, **extra), seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    state, done = None, 0
    with torch.no_grad():
        while done < cfg.stream_tokens:
            n = min(cfg.stream_piece, cfg.stream_tokens - done)
            x = torch.randn(1, n, cfg.dim, generator=gen) * cfg.stream_scale
            try:
                y, state = m(x, state)
            except StateError:  # the weights overflowed within this piece
                return done
            if not bool(torch.isfinite(y).all()):
                return done
            done += n
    return done


@dataclass
class CapacityRow:
    update: str
    depth: int
    chunk: int
    max_lr: float
    removed: float  # mean fraction of ℓ removed by one write
    removed_min: float  # worst trial
    finite: dict[str, int]  # gates setting → longest finite stream (tokens)


def run_capacity(cfg: CapacityConfig, progress: Callable[[str], None] = lambda s: None) -> list[CapacityRow]:
    rows = []
    for update in cfg.updates:
        for depth in cfg.depths:
            for chunk in cfg.chunks:
                removed, worst = write_once_removed(cfg, update, depth, chunk)
                finite = {g: longest_finite_stream(cfg, update, depth, chunk, g) for g in cfg.stream_gates}
                max_lr = float(cfg.memory_config(update, depth, chunk).max_lr)
                rows.append(CapacityRow(update, depth, chunk, max_lr, removed, worst, finite))
                progress(f"{update} depth {depth} chunk {chunk}: removed {removed:.1%} "
                         f"(worst {worst:.1%}), finite {finite}")
    return rows
