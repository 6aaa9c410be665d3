"""``lifelong bench memory``: speed of the Titans neural memory, optionally against titans-pytorch."""

from __future__ import annotations

import typer

from lifelong.errors import ConfigError


def bench_memory_cmd(
    compare: str = typer.Option(
        "titans-pytorch", "--compare", help="peer library to measure in the same run, or 'none'"
    ),
    dim: int = typer.Option(256, help="model width"),
    heads: int = typer.Option(4, help="memory heads"),
    head_dim: int = typer.Option(64, help="width per head"),
    depth: int = typer.Option(2, help="layers of the memory MLP"),
    expansion: float = typer.Option(4.0, help="hidden width = expansion · head_dim"),
    chunk: int = typer.Option(64, help="tokens per memory write (titans-pytorch batch_size)"),
    batch: int = typer.Option(4, help="sequences per step"),
    seq: int = typer.Option(2048, help="tokens per sequence"),
    repeats: int = typer.Option(5, help="measured repeats per contender (interleaved)"),
    warmup: int = typer.Option(1, help="unmeasured warm-up repeats"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    memory_lengths: str = typer.Option(
        "2048,8192,32768", help="comma-separated lengths for the streaming-memory check; '' skips it"
    ),
    stream_piece: int = typer.Option(512, help="tokens per call when streaming"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)"),
    quick: bool = typer.Option(
        False, "--quick", help="tiny config and few repeats: a smoke run, not a measurement"
    ),
) -> None:
    """Training and inference tokens/s of the neural memory; last line is machine-readable."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from lifelong.bench import memory_speed as ms

    console = Console()
    peer = None if compare.lower() in ("", "none") else compare
    if peer not in (None, "titans-pytorch"):
        raise ConfigError(f"unknown peer {compare!r}", hint="use --compare titans-pytorch or none")
    if peer == "titans-pytorch":
        try:
            import titans_pytorch  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "titans-pytorch is not installed",
                hint="pip install 'lifelong[bench]', or pass --compare none",
            ) from exc
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"unknown dtype {dtype!r}", hint="use float32, bfloat16 or float16")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("no CUDA device is available", hint="run with --device cpu")
    if threads > 0:
        torch.set_num_threads(threads)
    lengths = [int(s) for s in memory_lengths.split(",") if s.strip()]
    if quick:
        dim, heads, head_dim, chunk, batch, seq = 64, 2, 32, 16, 2, 256
        repeats, warmup, lengths, stream_piece = 2, 1, [512, 2048], 128
    cfg = ms.MemoryBenchConfig(
        dim=dim, heads=heads, head_dim=head_dim, depth=depth, expansion=expansion, chunk=chunk,
        batch=batch, seq=seq, repeats=repeats, warmup=warmup, compare=peer, device=device,
        dtype=dtype, memory_lengths=lengths, stream_piece=stream_piece,
    )
    from lifelong.neural import native

    if device == "cpu":  # build (or load) the native chunk loop before anything is timed
        loop = "native" if native.load() is not None else f"eager ({native.error() or 'LIFELONG_NATIVE=0'})"
    else:
        loop = "eager (CUDA)"
    console.print(
        f"[bold]neural memory speed[/] dim {dim}, {heads} heads × {head_dim}, depth {depth} "
        f"(expansion {expansion:g}), chunk {chunk}, batch {batch} × {seq}, {device} {dtype}, "
        f"{torch.get_num_threads()} threads, {repeats} repeats (+{warmup} warm-up), interleaved; "
        f"chunk loop: {loop}"
    )
    timings = ms.run_speed(cfg, progress=lambda s: console.print(f"  {s}", style="dim"))
    res = ms.summarize(cfg, timings)

    table = Table(title="tokens/s: best repeat (median)")
    for col in ("library", "train tok/s", "infer tok/s"):
        table.add_column(col, justify="right" if col != "library" else "left")
    table.add_row("lifelong", f"{res['train_tok_s']:,.0f} ({res['train_tok_s_median']:,.0f})",
                  f"{res['infer_tok_s']:,.0f} ({res['infer_tok_s_median']:,.0f})")
    if peer:
        table.add_row(peer, f"{res['peer_train_tok_s']:,.0f} ({res['peer_train_tok_s_median']:,.0f})",
                      f"{res['peer_infer_tok_s']:,.0f} ({res['peer_infer_tok_s_median']:,.0f})")
        table.add_row(
            "ratio: median pair (best/best; pair range)",
            f"{res['train_ratio']:.2f}× ({res['train_ratio_best']:.2f}×; "
            f"{res['train_ratio_min']:.2f}–{res['train_ratio_max']:.2f})",
            f"{res['infer_ratio']:.2f}× ({res['infer_ratio_best']:.2f}×; "
            f"{res['infer_ratio_min']:.2f}–{res['infer_ratio_max']:.2f})",
        )
    console.print(table)

    fwd = ms.forward_flops_per_token(cfg)
    peak = ms.matmul_peak_flops(device, ms._dtype(dtype))
    train_rate = 3 * fwd * res["train_tok_s"]
    infer_rate = fwd * res["infer_tok_s"]
    console.print(
        f"lifelong matmul FLOPs: {fwd / 1e6:.2f} MFLOP/token forward (training ≈ 3×); "
        f"achieved {train_rate / 1e9:.1f} GFLOP/s training ({train_rate / peak:.0%} of the "
        f"measured 2048² matmul peak {peak / 1e9:.1f} GFLOP/s), {infer_rate / 1e9:.1f} GFLOP/s "
        f"inference ({infer_rate / peak:.0%})"
    )

    if lengths:
        mem = Table(title=f"streaming inference, {stream_piece} tokens per call: RSS (MiB, /proc)")
        for col in ("tokens", "after first call", "peak over the rest", "growth"):
            mem.add_column(col, justify="right")
        for length, base, top in ms.run_stream_memory(cfg):
            mem.add_row(f"{length:,}", f"{base:,.1f}", f"{top:,.1f}", f"{top - base:+,.1f}")
        console.print(mem)

    line = (
        f"train_ratio={res.get('train_ratio', float('nan')):.2f} "
        f"infer_ratio={res.get('infer_ratio', float('nan')):.2f} "
        f"train_tok_s={res['train_tok_s']:.0f} "
        f"peer_train_tok_s={res.get('peer_train_tok_s', float('nan')):.0f}"
    )
    print(line)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    bench_app.command("memory")(bench_memory_cmd)
