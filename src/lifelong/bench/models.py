"""Baselines and fair comparison: parameter counts, size matching, speed and memory.

The baselines themselves are model kinds of the shared shell (``lm.py``):
``transformer`` (full causal attention, RoPE, ``scaled_dot_product_attention``),
``swa`` (the same with a sliding window) and ``deltanet`` (Gated DeltaNet,
``deltanet.py``). A comparison is fair when the models have the same number of
parameters: set the same ``param_budget`` in each config and ``build_model``
solves each model's MLP width to meet it; ``param_counts`` and ``check_matched``
verify the result (within 10 % by default).

``measure_model`` times one config: training tokens/s at the training shape,
and streaming inference (``CausalLM.stream``) tokens/s and carried-state size by
sequence length -- the "constant memory beyond the window" claim, measured.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from lifelong.errors import ConfigError
from lifelong.neural.lm import build_model, state_nbytes
from lifelong.train.config import RunConfig

BASELINE_KINDS = ("transformer", "swa", "deltanet")
MEMORY_KINDS = ("lmm", "mac", "mag", "mal")






def measure_model(
    cfg: RunConfig,
    lengths: list[int],
    chunk: int = 512,
    train_steps: int = 3,
    batch_size: int = 8,
    seq_len: int = 256,
    device: str = "cpu",
    cpu_peak: bool = False,
) -> dict[str, Any]:
    """Training and streaming-inference throughput and memory of one config.

    Inputs are random token ids: speed and memory do not depend on what the
    tokens say. Inference streams one sequence (batch 1) in chunks of ``chunk``
    tokens, carrying the state; ``state_mb`` is what the model carries after
    ``length`` tokens (KV cache, recurrent or memory state), ``peak_mb`` the peak
    memory of the pass above what the loaded model holds: the CUDA allocator's
    peak on a GPU; with ``cpu_peak`` on the CPU, the peak resident memory of a fresh
    process doing only that pass (``inference_peak_mb``).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no GPU is visible", hint="use --device cpu")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(dev)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch_size, seq_len + 1), generator=gen).to(dev)

    def train_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    train_step()  # warm-up: allocator, kernels
    sync(dev)
    start = time.perf_counter()
    for _ in range(train_steps):
        train_step()
    sync(dev)
    train_tps = train_steps * batch_size * seq_len / (time.perf_counter() - start)

    model.eval()
    inference = []
    for length in lengths:
        seq = torch.randint(0, vocab, (1, length), generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        sync(dev)
        start = time.perf_counter()
        state = None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
        with torch.no_grad(), autocast:
            for s in range(0, length, chunk):
                _, state = model(seq[:, s : s + chunk], state)
        sync(dev)
        elapsed = time.perf_counter() - start
        row = {
            "length": length,
            "tokens_per_s": length / elapsed,
            "state_mb": state_nbytes(state) / 2**20,
        }
        if dev.type == "cuda":
            row["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        elif cpu_peak:
            row["peak_mb"] = inference_peak_mb(cfg, length, chunk)
        inference.append(row)
    return {
        "name": cfg.name,
        "kind": cfg.model.kind,
        "params": model.num_params(),
        "mlp_hidden": model.config.mlp_hidden,
        "train_tokens_per_s": train_tps,
        "train_shape": [batch_size, seq_len],
        "inference": inference,
        "chunk": chunk,
        "device": device,
    }


def inference_peak_mb(cfg: RunConfig, length: int, chunk: int) -> float:
    """Peak resident memory (MB) of streaming ``length`` tokens, above the loaded model.

    CPU PyTorch keeps no allocator statistics, so the pass runs in a fresh process
    (nothing earlier has grown its heap) while a thread samples its resident set
    size every millisecond; the baseline is the size just before the pass.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_peak_child, args=(cfg.to_dict(), length, chunk, torch.get_num_threads(), queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(cfg_dict: dict, length: int, chunk: int, threads: int, queue: Any) -> None:
    import threading

    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).eval()
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(0, model.config.vocab_size, (1, length), generator=gen)
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    state = None
    with torch.no_grad():
        for s in range(0, length, chunk):
            _, state = model(seq[:, s : s + chunk], state)
    done.set()
    sampler.join()
    queue.put((max(peak[0], _rss_bytes()) - base) / 2**20)


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer reads what it measures (no-op on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


