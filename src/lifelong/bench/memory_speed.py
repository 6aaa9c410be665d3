"""Speed of the neural memory: training and inference tokens/s, and streaming memory use.

``lifelong bench memory --compare titans-pytorch`` runs lifelong's ``NeuralMemory``
and titans-pytorch's ``NeuralMemory`` in one process at the same configuration
and the same semantics (weights written every ``chunk`` tokens; titans-pytorch
``chunk_size = batch_size = chunk``), interleaving their repeats so that both see
the same machine load. A repeat's time is wall-clock; the ratios use each side's
best repeat (the least disturbed by other processes) and the table also shows
medians.

Training = forward + backward of ``mean(y²)`` over a [batch, seq, dim] input.
Inference = forward under ``torch.no_grad``.

Streaming memory: for each length, a fresh process builds the memory, feeds the
sequence in pieces of ``stream_piece`` tokens carrying the state (no grad) and
reports its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) minus
the peak after the first piece: the growth must not depend on the length.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lifelong.neural.memory import NeuralMemory, NeuralMemoryConfig


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

    def memory_config(self) -> NeuralMemoryConfig:
        return NeuralMemoryConfig(
            dim=self.dim, heads=self.heads, head_dim=self.head_dim, depth=self.depth,
            expansion=self.expansion, chunk_size=self.chunk,
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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_train(model: torch.nn.Module, x: torch.Tensor, device: str) -> float:
    model.zero_grad(set_to_none=True)
    _sync(device)
    start = time.perf_counter()
    y, _ = model(x)
    y.float().square().mean().backward()
    _sync(device)
    return time.perf_counter() - start


def _time_infer(model: torch.nn.Module, x: torch.Tensor, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    _sync(device)
    return time.perf_counter() - start


def run_speed(
    cfg: MemoryBenchConfig, progress: Callable[[str], None] = lambda s: None
) -> dict[str, Timing]:
    """Interleaved repeats: for each repeat, train then infer, each contender in turn."""
    torch.manual_seed(cfg.seed)
    dtype = _dtype(cfg.dtype)
    models = {"lifelong": build_lifelong(cfg)}
    if cfg.compare == "titans-pytorch":
        models["titans-pytorch"] = build_titans_pytorch(cfg)
    for name in models:
        models[name] = models[name].to(device=cfg.device, dtype=dtype)
    x = torch.randn(cfg.batch, cfg.seq, cfg.dim, device=cfg.device, dtype=dtype)
    timings = {name: Timing() for name in models}
    for r in range(cfg.warmup + cfg.repeats):
        for name, model in models.items():
            train = _time_train(model, x, cfg.device)
            infer = _time_infer(model, x, cfg.device)
            if r >= cfg.warmup:
                timings[name].train_s.append(train)
                timings[name].infer_s.append(infer)
            progress(f"repeat {r + 1 - cfg.warmup}/{cfg.repeats} {name}: "
                     f"train {train:.2f}s infer {infer:.2f}s" + (" (warm-up)" if r < cfg.warmup else ""))
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


def matmul_peak_flops(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a square matmul on this device: the practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# --- streaming memory: flat in the length ---------------------------------------------


def _stream_worker(cfg: MemoryBenchConfig, length: int, out: mp.Queue) -> None:
    import resource

    torch.manual_seed(cfg.seed)
    model = build_lifelong(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = None
    base = 0
    with torch.no_grad():
        for i, lo in enumerate(range(0, length, cfg.stream_piece)):
            n = min(cfg.stream_piece, length - lo)
            _, state = model(torch.randn(cfg.batch, n, cfg.dim, generator=gen), state)
            if i == 0:
                base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put((base / 1024, peak / 1024))  # ru_maxrss is in KiB on Linux


def run_stream_memory(cfg: MemoryBenchConfig) -> list[tuple[int, float, float]]:
    """(length, peak RSS MiB after the first piece, peak RSS MiB after all) per length."""
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
    tokens = cfg.batch * cfg.seq
    ours = timings["lifelong"]
    result = {
        "train_tok_s": tokens / min(ours.train_s),
        "infer_tok_s": tokens / min(ours.infer_s),
        "train_tok_s_median": tokens / statistics.median(ours.train_s),
        "infer_tok_s_median": tokens / statistics.median(ours.infer_s),
    }
    peer = timings.get("titans-pytorch")
    if peer is not None:
        result.update(
            peer_train_tok_s=tokens / min(peer.train_s),
            peer_infer_tok_s=tokens / min(peer.infer_s),
            peer_train_tok_s_median=tokens / statistics.median(peer.train_s),
            peer_infer_tok_s_median=tokens / statistics.median(peer.infer_s),
        )
        result["train_ratio"] = result["train_tok_s"] / result["peer_train_tok_s"]
        result["infer_ratio"] = result["infer_tok_s"] / result["peer_infer_tok_s"]
    return result
