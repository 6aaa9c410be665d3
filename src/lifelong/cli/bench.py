"""``lifelong bench …``: every benchmark command (speed and quality; never timed tests).

- ``run``, ``sample``, ``data``, ``tokenizers``, ``generators``: the long-context suites.
- ``models``: training and streaming-inference speed and state size of model configs.
- ``memory``: the neural memory's speed, against titans-pytorch in the same run.
- ``llm``: load time, prefill and decode tokens/s of a model backend.
- ``store``: notes render and docs search latency, writes/s on SQLite and PostgreSQL.
- ``consolidate``: notes → weights: readers with notes vs with the consolidated adapter vs neither.
- ``continual``: learners over a continual-learning stream: retention matrix, ACC / BWT / forgetting, cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lifelong.cli.common import MODEL_HELP, console, err_console
from lifelong.errors import ConfigError

bench_app = typer.Typer(
    help="Benchmarks of speed and quality (commands, never timed tests).", no_args_is_help=True
)


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values read as int, float, bool or string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"bad option {item!r}", hint="write options as key=value")
        key, raw = item.split("=", 1)
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                pass
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[key.strip()] = value
    return out


@bench_app.command("run")
def bench_run(
    model: Path = typer.Option(..., "--model", help="checkpoint written by `lifelong train`"),
    suite: str = typer.Option(
        "s_niah", help="suite (mqar, s_niah, niah, babilong) or task names"
    ),
    lengths: str = typer.Option("1k,2k,4k,8k,16k", help="comma-separated, e.g. 0k,1k,2k"),
    n: int = typer.Option(20, "--n", help="examples per task and length"),
    seed: int = typer.Option(0, help="seed of the generated examples"),
    out: Path = typer.Option(Path("bench-results"), "--out", help="folder for JSON + PNG"),
    device: str = typer.Option("cpu", help="torch device"),
    option: list[str] = typer.Option(None, "--option", help="task option key=value"),
    prefill_chunk: int = typer.Option(
        0, "--prefill-chunk",
        help="read prompts this many tokens at a time, carrying the state (0: whole)",
    ),
) -> None:
    """Accuracy by length of a trained model on a benchmark suite: table, JSON and PNG."""
    from rich.console import Console
    from rich.table import Table

    from lifelong.bench import evaluate as ev
    from lifelong.data.registry import parse_lengths, suite_tasks

    console = Console()
    names = suite_tasks(suite)
    lens = parse_lengths(lengths)
    if not model.exists():
        raise ConfigError(
            f"no checkpoint at {model}", hint="train one with `lifelong train CONFIG`"
        )
    try:
        from lifelong.train.checkpoint import load_checkpoint
    except ImportError as exc:
        raise ConfigError(
            f"cannot load checkpoints: {exc}",
            hint="install the neural extra: pip install 'lifelong[neural]'",
        ) from exc
    net, meta = load_checkpoint(str(model), device=device)
    tasks = ev.tasks_for_model(names, meta, _parse_options(option))
    with console.status("evaluating") as status:
        report = ev.evaluate(
            net, tasks, lens, n, seed, device, progress=status.update, chunk=prefill_chunk or None
        )
    label = model.parent.name if model.name == "model" else model.stem  # OUT/model: the run's name
    report.update(model=str(model), suite=suite, title=f"{label}: {suite}", step=meta.get("step"),
                  chance={name: ev.chance_level(task) for name, task in tasks.items()})
    header, rows = ev.table_rows(report)
    table = Table(title=f"accuracy by length — {model.name} on {suite} (n={n}, seed={seed})")
    for h in header:
        table.add_column(h, justify="left" if h == "task" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    stem = f"{label}-{suite.replace(',', '+')}"
    json_path, png_path = ev.write_report(report, out, stem)
    console.print(escape(f"wrote {json_path} and {png_path}"), highlight=False)

@bench_app.command("sample")
def bench_sample(
    suite: str = typer.Argument(..., help="suite or task name(s)"),
    length: str = typer.Option("1k", help="length in tokens, e.g. 512, 1k, 0k"),
    seed: int = typer.Option(0),
    tokenizer: str = typer.Option("bpe:4096", help="byte, bpe:VOCAB, or a tokenizer.json"),
    option: list[str] = typer.Option(None, "--option", help="task option key=value"),
) -> None:
    """Print one generated example of each task in SUITE (prompt, answer, references)."""
    from rich.console import Console
    from rich.rule import Rule

    from lifelong.data.registry import get_task, parse_length, suite_tasks

    console = Console()
    L = parse_length(length)
    for name in suite_tasks(suite):
        opts = {**_parse_options(option)}
        if name != "mqar":
            opts.setdefault("tokenizer", tokenizer)
        task = get_task(name, **opts)
        ex = task.eval_examples(1, L, seed)[0]
        console.print(Rule(f"{name} @ {length} (seed {seed})"))
        if ex.labels is not None:
            console.print(f"input ids ({len(ex.input_ids)}): {ex.input_ids}")
            console.print(
                f"scored positions: {[i for i, y in enumerate(ex.labels) if y != -100]}"
            )
            console.print(f"targets: {[y for y in ex.labels if y != -100]}")
            continue
        prompt = task.tokenizer.decode(ex.input_ids)
        console.print(prompt, markup=False, highlight=False)
        console.print(
            f"[bold]answer:[/]{ex.meta['answer']}  [dim]references={ex.references}[/]"
        )
        total = len(ex.input_ids) + len(task.tokenizer.encode(ex.meta["answer"])) + 1
        console.print(
            f"[dim]{total} tokens with answer and eos; tokenizer {task.tokenizer.spec}[/]"
        )

@bench_app.command("data")
def bench_data(
    tokenizer: str = typer.Option("bpe:4096", help="tokenizer to train and cache"),
) -> None:
    """Fetch and prepare the benchmark text once (book text, default BPE), for offline use."""
    import time

    from rich.console import Console

    from lifelong.data import haystack
    from lifelong.data.tokenizer import load_tokenizer

    console = Console()
    t0 = time.perf_counter()
    console.print(
        f"essays: {len(haystack.essay_sentences())} sentences in {haystack.essays_dir()}"
    )
    console.print(
        f"books: {len(haystack.book_sentences())} sentences in {haystack.books_dir()}"
    )
    tok = load_tokenizer(tokenizer)
    console.print(f"tokenizer {tok.spec}: {tok.vocab_size} tokens")
    console.print(f"ready in {time.perf_counter() - t0:.1f} s")

@bench_app.command("tokenizers")
def bench_tokenizers(
    specs: str = typer.Option("byte,bpe:1024,bpe:4096,bpe:8192", help="tokenizer specs"),
    words: int = typer.Option(1000, help="words of essay text to measure"),
) -> None:
    """Compare tokenizers: train/load time, tokens per word, words in a 1k S-NIAH-2 prompt."""
    import random
    import time

    from rich.console import Console
    from rich.table import Table

    from lifelong.data import haystack
    from lifelong.data.registry import get_task

    console = Console()
    t0 = time.perf_counter()
    haystack.essay_sentences()
    haystack.book_sentences()
    console.print(f"corpus ready (essays + book text) in {time.perf_counter() - t0:.2f} s")
    text = " ".join(" ".join(haystack.essay_sentences()).split()[:words])
    table = Table(title=f"tokenizers on {words} words of essay text")
    for col in (
        "spec",
        "vocab",
        "train or load s",
        f"tokens / {words} words",
        "words in 1k S-NIAH-2",
    ):
        table.add_column(col, justify="right")
    for spec in [s.strip() for s in specs.split(",") if s.strip()]:
        t0 = time.perf_counter()
        task = get_task("s_niah_2", tokenizer=spec)
        load_s = time.perf_counter() - t0
        n_tok = len(task.tokenizer.encode(text))
        ex = task.make(random.Random(0), 1023)
        n_words = len("".join(ex.pieces).split())
        table.add_row(spec, str(task.vocab_size), f"{load_s:.2f}", str(n_tok), str(n_words))
    console.print(table)

@bench_app.command("generators")
def bench_generators(
    suite: str = typer.Option("mqar,niah,babilong", help="suites or task names"),
    lengths: str = typer.Option("1k,8k", help="sequence lengths"),
    batch: int = typer.Option(16, help="batch size of sample_batch"),
    tokenizer: str = typer.Option("bpe:4096", help="tokenizer of the text tasks"),
) -> None:
    """Training-data speed: tokens/s of each task's sample_batch at each length."""
    import time

    import torch
    from rich.console import Console
    from rich.table import Table

    from lifelong.bench.evaluate import format_length
    from lifelong.data.registry import get_task, parse_lengths, suite_tasks

    lens = parse_lengths(lengths)
    table = Table(title=f"sample_batch({batch}, L) speed, tokens/s (tokenizer {tokenizer})")
    table.add_column("task")
    for L in lens:
        table.add_column(format_length(L), justify="right")
    for name in suite_tasks(suite):
        task = get_task(name, **({} if name == "mqar" else {"tokenizer": tokenizer}))
        task.sample_batch(2, lens[0], torch.Generator().manual_seed(0))  # warm caches
        row = [name]
        for L in lens:
            t0 = time.perf_counter()
            task.sample_batch(batch, L, torch.Generator().manual_seed(1))
            row.append(f"{batch * L / (time.perf_counter() - t0):,.0f}")
        table.add_row(*row)
    Console().print(table)


@bench_app.command("models")
def bench_models_command(
    configs: list[Path] = typer.Argument(..., help="Run configs whose [model] tables to measure."),
    lengths: str = typer.Option(
        "1k,2k,4k,8k", help="Inference lengths (tokens), comma-separated; k = 1024."
    ),
    prefill_chunk: int = typer.Option(512, "--prefill-chunk", help="Tokens per call when streaming inference."),
    train_steps: int = typer.Option(3, help="Timed training steps (after one warm-up step)."),
    batch_size: int | None = typer.Option(None, help="Training batch (default: the config's)."),
    seq_len: int | None = typer.Option(None, help="Training length (default: the config's)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)."),
    peak_memory: bool = typer.Option(
        False, "--peak-memory", help="On CPU, also measure each pass's peak memory (fresh process)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
) -> None:
    """Parameters, training tokens/s, and streaming inference tokens/s and memory by length."""
    import json

    import torch
    from rich.console import Console
    from rich.table import Table

    from lifelong.atomic import atomic_write_text
    from lifelong.bench.evaluate import format_length
    from lifelong.bench.models import measure_model
    from lifelong.data.registry import parse_lengths
    from lifelong.train.config import load_config

    if threads:
        torch.set_num_threads(threads)
    lens = parse_lengths(lengths)
    console = Console(width=max(Console().width, 110))  # the table needs the room
    rows = []
    for path in configs:
        cfg = load_config(path)
        console.print(escape(f"measuring {cfg.name} ({cfg.model.kind}) …"), highlight=False)
        rows.append(
            measure_model(
                cfg,
                lengths=lens,
                chunk=prefill_chunk,
                train_steps=train_steps,
                batch_size=batch_size or cfg.train.batch_size,
                seq_len=seq_len or cfg.train.seq_len,
                device=device,
                cpu_peak=peak_memory,
            )
        )
    title = f"models on {device}: training, and streaming inference in chunks of {prefill_chunk}"
    table = Table(title=title)
    for name in ("model", "params", "train tok/s", "length", "infer tok/s", "state MB"):
        table.add_column(name, justify="left" if name == "model" else "right")
    show_peak = device.startswith("cuda") or peak_memory
    if show_peak:
        table.add_column("peak MB", justify="right")
    for r in rows:
        for i, x in enumerate(r["inference"]):
            cells = [r["name"], f"{r['params']:,}", f"{r['train_tokens_per_s']:,.0f}"]
            if i:
                cells = ["", "", ""]
            cells += [format_length(x["length"]), f"{x['tokens_per_s']:,.0f}", f"{x['state_mb']:.2f}"]
            if show_peak:
                cells.append(f"{x['peak_mb']:.1f}")
            table.add_row(*cells)
    console.print(table)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rows, indent=2))


@bench_app.command("hope")
def bench_hope_cmd(
    compare: str = typer.Option("nested-learning", "--compare", help="peer library, or 'none'"),
    dim: int = typer.Option(64, help="model width"),
    layers: int = typer.Option(2, help="blocks"),
    heads: int = typer.Option(4, help="attention / memory heads"),
    cms_periods: str = typer.Option("16,64", help="CMS update periods (chunk sizes), comma-separated"),
    selfmod_chunk: int = typer.Option(8, help="self-modifying Titans chunk size"),
    batch: int = typer.Option(4, help="sequences per step"),
    seq: int = typer.Option(128, help="tokens per sequence"),
    repeats: int = typer.Option(3, help="measured repeats per side (interleaved)"),
    warmup: int = typer.Option(1, help="unmeasured warm-up repeats"),
    retrofit: bool = typer.Option(False, "--retrofit", help="also measure the retrofitted Gemma"),
    retrofit_layers: str = typer.Option("14-17", help="the retrofit's layers"),
    retrofit_levels: str = typer.Option("16,64", help="the retrofit's CMS chunk sizes"),
    retrofit_lr: float = typer.Option(1e-5, help="the retrofit's inner learning rate"),
    retrofit_tokens: int = typer.Option(512, help="tokens of prose the retrofit reads"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the results here"),
) -> None:
    """Hope against nested-learning: matching outputs, training / inference tokens/s."""
    import torch

    from lifelong.atomic import atomic_write_text
    from lifelong.bench import hope as hb

    if threads > 0:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {}
    if compare.lower() not in ("", "none"):
        if compare != "nested-learning":
            raise ConfigError(f"unknown peer {compare!r}", hint="use --compare nested-learning or none")
        results["outputs"] = [hb.compare_selfmod(chunk_memory=8, chunk_other=4),
                              hb.compare_selfmod(chunk_memory=4, chunk_other=8)]
        for r in results["outputs"]:
            console.print(f"{r['component']}, chunks mem {r['chunk_memory']} / other {r['chunk_other']}: "
                          f"max |Δ output| {r['max_abs_diff_output']:.2e} (scale {r['output_scale']:.2f}), "
                          f"max |Δ memories| {r['max_abs_diff_memories']:.2e}")
        cfg = hb.HopeBenchConfig(dim=dim, n_layers=layers, heads=heads,
                                 cms_periods=[int(x) for x in cms_periods.split(",")],
                                 selfmod_chunk=selfmod_chunk, batch=batch, seq=seq, repeats=repeats,
                                 warmup=warmup)
        speed = hb.measure_speed(cfg)
        results["speed"] = speed
        table = Table(title=f"Hope, dim {dim}, {layers} layers, batch {batch} × {seq}, "
                            f"{speed['threads']} threads (tokens/s, medians)")
        for col in ("", "nested-learning", "lifelong", "lifelong / peer"):
            table.add_column(col, justify="right")
        for name in ("train", "train_first_order", "infer", "infer_static"):
            r = speed[name]
            table.add_row(name, f"{r['peer_tok_s']:,.0f}", f"{r['lifelong_tok_s']:,.0f}",
                          f"{r['speedup_median_pair']:.2f}×")
        console.print(table)
    if retrofit:
        from lifelong.neural.retrofit import parse_layers

        r = hb.measure_retrofit(parse_layers(retrofit_layers), tuple(int(x) for x in retrofit_levels.split(",")),
                                retrofit_lr, retrofit_tokens)
        results["retrofit"] = r
        for key in ("static", "learning"):
            x = r[key]
            console.print(f"retrofit {key}: {x['tokens_per_s']:.1f} tok/s, session {x['session_mb']:.0f} MB "
                          f"(weights {x['weights_mb']:.0f} MB), loss of the second half {x['nll_second_half']:.3f}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(results, indent=2))
    console.print(json.dumps(results))


@bench_app.command("memory")
def bench_memory_cmd(
    compare: str = typer.Option(
        "titans-pytorch", "--compare",
        help="peer to measure in the same run: titans-pytorch, lifelong with update rule paper or bounded, or none"
    ),
    dim: int = typer.Option(256, help="model width"),
    heads: int = typer.Option(4, help="memory heads"),
    head_dim: int = typer.Option(64, help="width per head"),
    depth: int = typer.Option(2, help="layers of the memory MLP"),
    expansion: float = typer.Option(4.0, help="hidden width = expansion · head_dim"),
    write_chunk: int = typer.Option(64, "--write-chunk", help="tokens per memory write (titans-pytorch batch_size)"),
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
    update: str = typer.Option(
        "paper", help="the memory's update rule for the speed run: paper (titans-pytorch's) or bounded"
    ),
    capacity: bool = typer.Option(
        False, "--capacity",
        help="instead of speed: the fraction of retrieval error one write of --pairs pairs removes, "
        "by rule, depth and chunk size, and the longest stream that stays finite",
    ),
    pairs: int = typer.Option(16, help="--capacity: key→value pairs written once"),
    depths: str = typer.Option("1,2", help="--capacity: comma-separated memory depths"),
    chunks: str = typer.Option("1,4,16,64", help="--capacity: comma-separated write chunk sizes"),
    updates: str = typer.Option("bounded,paper", help="--capacity: comma-separated update rules"),
    max_lr: float = typer.Option(0.0, "--max-lr", help="--capacity: θ bound (0: each rule's default)"),
    trials: int = typer.Option(8, help="--capacity: draws of keys, values and initial weights"),
    drain: int = typer.Option(30, help="--capacity: chunks of momentum after the write"),
    stream_tokens: int = typer.Option(32768, help="--capacity: longest stream tried"),
    stream_scale: float = typer.Option(10.0, help="--capacity: RMS of the streamed input"),
    value_norm: str = typer.Option(
        "rule", "--value-norm", help="--capacity: ℓ2-normalize values: rule (the rule's default), on, off"
    ),
    gates: str = typer.Option("chunk", help="--capacity: granularity of α and η, chunk or token"),
    json_out: Path = typer.Option(None, "--json", help="--capacity: also write the rows as JSON here"),
) -> None:
    """Training and inference tokens/s of the neural memory; last line is machine-readable.
    With --capacity: how much one write stores and how long the memory stays finite."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from lifelong.bench import memory as ms

    console = Console()
    if threads > 0:
        torch.set_num_threads(threads)
    if capacity:
        _capacity(console, dim=dim, heads=heads, head_dim=head_dim, expansion=expansion, pairs=pairs,
                  depths=depths, chunks=chunks, updates=updates, max_lr=max_lr, trials=trials,
                  drain=drain, stream_tokens=stream_tokens, stream_scale=stream_scale,
                  stream_piece=stream_piece, quick=quick, json_out=json_out, value_norm=value_norm,
                  gates=gates)
        return
    if update not in ("paper", "bounded"):
        raise ConfigError(f"unknown update rule {update!r}", hint="use --update paper or --update bounded")
    peer = None if compare.lower() in ("", "none") else compare
    if peer not in (None, "titans-pytorch", "paper", "bounded"):
        raise ConfigError(f"unknown peer {compare!r}", hint="use --compare titans-pytorch, paper, bounded or none")
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
    lengths = [int(s) for s in memory_lengths.split(",") if s.strip()]
    if quick:
        dim, heads, head_dim, write_chunk, batch, seq = 64, 2, 32, 16, 2, 256
        repeats, warmup, lengths, stream_piece = 2, 1, [512, 2048], 128
    cfg = ms.MemoryBenchConfig(
        dim=dim, heads=heads, head_dim=head_dim, depth=depth, expansion=expansion, chunk=write_chunk,
        batch=batch, seq=seq, repeats=repeats, warmup=warmup, compare=peer, device=device,
        dtype=dtype, memory_lengths=lengths, stream_piece=stream_piece, update=update,
    )
    from lifelong.neural.memory import native

    if device == "cpu":  # build (or load) the native chunk loop before anything is timed
        loop = "native" if native.load() is not None else f"eager ({native.error() or 'LIFELONG_NATIVE=0'})"
    else:
        loop = "eager (CUDA)"
    console.print(
        f"[bold]neural memory speed[/] dim {dim}, {heads} heads × {head_dim}, depth {depth} "
        f"(expansion {expansion:g}), write chunk {write_chunk}, update {update}, batch {batch} × {seq}, "
        f"{device} {dtype}, "
        f"{torch.get_num_threads()} threads, {repeats} repeats (+{warmup} warm-up), interleaved; "
        f"chunk loop: {loop}"
    )
    timings = ms.run_speed(cfg, progress=lambda s: console.print(f"  {s}", style="dim"))
    res = ms.summarize(cfg, timings)

    table = Table(title="tokens/s: best repeat (median)")
    for col in ("library", "train tok/s", "infer tok/s"):
        table.add_column(col, justify="right" if col != "library" else "left")
    table.add_row("lifelong" if peer in (None, "titans-pytorch") else f"lifelong, update {update}",
                  f"{res['train_tok_s']:,.0f} ({res['train_tok_s_median']:,.0f})",
                  f"{res['infer_tok_s']:,.0f} ({res['infer_tok_s_median']:,.0f})")
    if peer:
        table.add_row(peer if peer == "titans-pytorch" else f"lifelong, update {peer}",
                      f"{res['peer_train_tok_s']:,.0f} ({res['peer_train_tok_s_median']:,.0f})",
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


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated whole numbers, got {text!r}",
                          hint=f"e.g. --{name} 1,2") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--{name} needs at least one value, each ≥ 1, got {text!r}", hint=f"e.g. --{name} 1,2")
    return values


def _capacity(console, *, dim: int, heads: int, head_dim: int, expansion: float, pairs: int, depths: str,
              chunks: str, updates: str, max_lr: float, trials: int, drain: int, stream_tokens: int,
              stream_scale: float, stream_piece: int, quick: bool, json_out: Path | None,
              value_norm: str = "rule", gates: str = "chunk") -> None:
    import dataclasses

    import torch
    from rich.table import Table

    from lifelong.bench import memory as ms

    rules = [u.strip() for u in updates.split(",") if u.strip()]
    if not rules or any(u not in ("bounded", "paper") for u in rules):
        raise ConfigError(f"--updates must list bounded and/or paper, got {updates!r}", hint="e.g. --updates bounded,paper")
    for name, value in (("pairs", pairs), ("trials", trials), ("stream-tokens", stream_tokens),
                        ("stream-piece", stream_piece), ("head-dim", head_dim), ("heads", heads), ("dim", dim)):
        if value < 1:
            raise ConfigError(f"--{name} must be ≥ 1, got {value}", hint=f"set --{name} to a positive number")
    if drain < 0 or max_lr < 0 or not stream_scale > 0:
        raise ConfigError("--drain and --max-lr must be ≥ 0 and --stream-scale > 0",
                          hint="e.g. --drain 30 --max-lr 0 --stream-scale 10")
    norms = {"rule": None, "on": True, "off": False}
    if value_norm not in norms:
        raise ConfigError(f"--value-norm must be rule, on or off, got {value_norm!r}", hint="e.g. --value-norm off")
    cfg = ms.CapacityConfig(
        value_norm=norms[value_norm], gates=gates,
        pairs=pairs, depths=_int_list(depths, "depths"), chunks=_int_list(chunks, "chunks"), updates=rules,
        max_lr=max_lr or None, dim=dim, heads=heads, head_dim=head_dim, expansion=expansion, drain=drain,
        trials=trials, stream_tokens=stream_tokens, stream_scale=stream_scale, stream_piece=stream_piece,
    )
    if quick:
        cfg = dataclasses.replace(cfg, dim=64, heads=2, head_dim=32, trials=2, stream_tokens=2048,
                                  stream_piece=512, chunks=[c for c in cfg.chunks if c <= 16] or [4])
    cfg.memory_config(cfg.updates[0], cfg.depths[0], cfg.chunks[0])  # a bad value: the memory's ConfigError
    console.print(
        f"[bold]neural memory capacity[/] one write of {cfg.pairs} random unit key→value pairs "
        f"(head width {cfg.head_dim}, expansion {cfg.expansion:g}; θ at its bound, α ≈ 0, η as "
        f"initialized), then {cfg.drain} chunks of momentum; fraction of ℓ = mean ‖M(k) − v‖² removed, "
        f"mean (worst) of {cfg.trials} draws. Streams: dim {cfg.dim}, {cfg.heads} heads, input RMS "
        f"{cfg.stream_scale:g}, up to {cfg.stream_tokens:,} tokens; value norm {value_norm}; {cfg.gates} gates; "
        f"{torch.get_num_threads()} threads"
    )
    rows = ms.run_capacity(cfg, progress=lambda s: console.print(f"  {s}", style="dim"))
    table = Table(title=f"one write of {cfg.pairs} pairs: fraction of the retrieval error removed")
    for col in ("update", "depth", "chunk", "max_lr", "removed", "worst",
                *(f"finite ({g})" for g in cfg.stream_gates)):
        table.add_column(col, justify="left" if col == "update" else "right")
    for r in rows:
        table.add_row(r.update, str(r.depth), str(r.chunk), f"{r.max_lr:.4g}",
                      f"{r.removed:.1%}", f"{r.removed_min:.1%}",
                      *(f"{r.finite[g]:,}" + ("" if r.finite[g] >= cfg.stream_tokens else " ✗")
                        for g in cfg.stream_gates))
    console.print(table)
    if json_out is not None:
        from lifelong.atomic import atomic_write_text

        payload = {"config": dataclasses.asdict(cfg), "rows": [dataclasses.asdict(r) for r in rows]}
        atomic_write_text(json_out, json.dumps(payload, indent=2))
    best = {(r.update, r.depth): max(x.removed for x in rows if (x.update, x.depth) == (r.update, r.depth))
            for r in rows}
    print(" ".join(f"{u}_depth{d}_best={v:.3f}" for (u, d), v in best.items()))


@bench_app.command("llm")
def bench_llm_cmd(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    prompt_tokens: int = typer.Option(512, help="Prompt length for prefill."),
    decode_tokens: int = typer.Option(128, help="Tokens to generate for decode."),
    repeats: int = typer.Option(3, help="Repeats (median reported)."),
    compare: str = typer.Option(
        "", help="Also measure 'llama-cpp-python' on the same GGUF, in the same run."),
) -> None:
    """Prefill and decode tokens/s and load time of a model backend."""
    from lifelong.bench.llm import LlamaCppPythonLLM, bench_llms
    from lifelong.cli.common import load_llm

    spec = model or None
    openers = [lambda: load_llm(spec)]
    if compare:
        if compare != "llama-cpp-python":
            from lifelong.errors import ConfigError

            raise ConfigError(f"unknown --compare {compare!r}", hint="the only peer is llama-cpp-python")
        from lifelong.llm.model_files import default_model_path

        path = str(default_model_path())
        openers.append(lambda: LlamaCppPythonLLM(path))
    from lifelong.cli.common import working

    with working("bench llm") as step:
        runs = bench_llms(openers, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens, repeats=repeats,
                          progress=step)
    table = Table(title="model backend throughput")
    for col in ("backend", "load s", "prefill tok/s", "decode tok/s", "prompt tok", "decoded tok"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for r in runs:
        table.add_row(r.name, f"{r.load_s:.2f}", f"{r.prefill_tok_s:.1f}", f"{r.decode_tok_s:.1f}",
                      str(r.prompt_tokens), str(r.decode_tokens))
    console.print(table)
    r = runs[0]
    if len(runs) > 1:
        p = runs[1]
        print(f"ratio to {p.name}: prefill {r.prefill_tok_s / p.prefill_tok_s:.2f}x, "
              f"decode {r.decode_tok_s / p.decode_tok_s:.2f}x, load {r.load_s / p.load_s:.2f}x")
    print(f"prefill_tok_s={r.prefill_tok_s:.1f} decode_tok_s={r.decode_tok_s:.1f} load_s={r.load_s:.2f}")


@bench_app.command("store")
def bench_store_cmd(
    notes: Annotated[int, typer.Option("--notes", help="Notes in the rendered namespace.")] = 10_000,
    docs: Annotated[int, typer.Option("--docs", help="Documents in the search index.")] = 10_000,
    queries: Annotated[int, typer.Option("--queries", help="Search queries timed.")] = 200,
    writes: Annotated[int, typer.Option("--writes", help="Note writes timed.")] = 300,
    postgres_url: Annotated[str | None, typer.Option("--postgres-url", help="Use this server (fresh "
                                                     "bench-* namespaces are left in it) instead of a "
                                                     "temporary one.")] = None,
    sqlite_only: Annotated[bool, typer.Option("--sqlite-only", help="Skip PostgreSQL.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic text.")] = 0,
) -> None:
    """Notes render latency, docs search p50/p99 and writes/s on SQLite and PostgreSQL."""
    from lifelong.bench.store import BenchConfig, run_bench

    cfg = BenchConfig(n_notes=notes, n_docs=docs, n_queries=queries, n_writes=writes, seed=seed)
    err = err_console
    backends = ("sqlite",) if sqlite_only else ("sqlite", "postgres")
    results = run_bench(cfg, postgres_url, backends=backends, progress=lambda s: err.print(f"[dim]{s}[/]"))
    table = Table("backend", f"render ms ({notes} notes)", f"search p50 ms ({docs} docs)", "search p99 ms",
                  "rescan ms", "index s", "writes/s")
    for r in results:
        table.add_row(r.backend, f"{r.render_ms:.2f}", f"{r.search_p50_ms:.2f}", f"{r.search_p99_ms:.2f}",
                      f"{r.rescan_ms:.1f}", f"{r.index_s:.1f}", f"{r.writes_s:.0f}")
    console.print(table)
    s = results[0]  # SQLite: the default store
    console.print("last line: SQLite figures (the default store)", style="dim")
    print(f"render_ms={s.render_ms:.2f} search_p50_ms={s.search_p50_ms:.2f} "
          f"search_p99_ms={s.search_p99_ms:.2f} writes_s={s.writes_s:.0f}")


@bench_app.command("consolidate")
def bench_consolidate_cmd(
    seeds: Annotated[str, typer.Option(help="Onboarding world seeds, comma-separated (held out: the "
                                       "protocol's runs use 0).")] = "100",
    rounds: Annotated[int, typer.Option(min=1, help="Consolidation rounds (the conventions split into them).")] = 3,
    readers: Annotated[int, typer.Option("--readers-per-fact", min=1, help="Reader tasks per convention.")] = 3,
    dissimilar: Annotated[int, typer.Option(min=0, help="Dissimilar reader tasks per condition.")] = 20,
    recorded: Annotated[int, typer.Option("--recorded-per-fact", min=0,
                                          help="Recorded task prompts per convention given to the round.")] = 1,
    raw: Annotated[bool, typer.Option(help="Also train the raw-note-text baseline.")] = True,
    model: Annotated[str, typer.Option("--model", "-m", help="A transformers spec.")] = "hf:local",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of a round.")] = 3,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-4,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 16,
    questions: Annotated[int, typer.Option(min=0, help="Model-written questions per note.")] = 4,
    general: Annotated[int, typer.Option(min=0, help="Model-written general questions per round.")] = 8,
    replay: Annotated[float, typer.Option(min=0.0, help="Replayed earlier examples per new one.")] = 1.0,
    out: Annotated[Path, typer.Option(help="Output folder (records.jsonl, adapters, stores).")] = Path(
        "consolidate-bench"),
) -> None:
    """Readers with notes in context vs with the consolidated adapter (and the raw-text
    baseline) vs neither, after each consolidation round; prints one line per round."""
    from lifelong.bench.consolidation import ConsolidationBenchConfig, run
    from lifelong.train.distill import DistillConfig

    try:
        seed_list = tuple(int(x) for x in seeds.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"bad --seeds {seeds!r}", hint="comma-separated integers, e.g. 100,101") from None
    dcfg = DistillConfig(epochs=epochs, lr=lr, rank=rank, questions_per_note=questions, general_prompts=general,
                         replay=replay)
    raw_cfg = DistillConfig(objective="raw", batch_size=1, lr=lr, rank=rank, replay=replay)
    cfg = ConsolidationBenchConfig(seeds=seed_list, rounds=rounds, readers_per_fact=readers,
                                   dissimilar=dissimilar, recorded_per_fact=recorded, raw_baseline=raw,
                                   model=model, distill=dcfg, raw=raw_cfg)

    def show(rec: dict[str, Any]) -> None:
        if rec.get("condition") == "total":
            return
        train = f" steps={rec['steps']} train_s={rec['train_s']} bytes={rec['adapter_bytes']}" if "steps" in rec else ""
        err_console.print(f"[dim]world {rec['world']} round {rec['round']} {rec['condition']:>7}: "
                          f"similar={rec['similar']} round1={rec['round1']} dissimilar={rec['dissimilar']} "
                          f"context={rec['context_tokens']}{train}[/]")

    records = run(cfg, out, log=show)
    console.print(consolidation_table(records))
    print(f"records: {out / 'records.jsonl'}")


@bench_app.command("continual")
def bench_continual_cmd(
    stream: Annotated[str, typer.Argument(help="class-incremental | novel-translation")],
    learners: Annotated[str, typer.Option(help="Comma-separated: none, icl, memory, memory+docs (context, on "
                                          "--model), hope-gemma, hope-gemma+icl (weights: the embedded model "
                                          "with CMS levels that learn while reading).")] = "none,icl",
    seeds: Annotated[str, typer.Option(help="Seeds of the generated streams, comma-separated.")] = "0,1,2",
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Stream option key=value (class-incremental: tasks, classes, train, test; "
        "novel-translation: languages, nouns, verbs, adjectives, parallel, test, script).")] = None,
    alone: Annotated[bool, typer.Option(help="Also learn each task alone, on a fresh learner.")] = False,
    upper: Annotated[bool, typer.Option(help="Also test tasks not yet learnt (the upper triangle).")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Output folder (records.jsonl, summary.json, heatmaps).")] = Path(
        "continual-bench"),
) -> None:
    """Learners over a stream of tasks: the retention matrix R[i][j], average score, backward
    transfer and forgetting (mean ± std over seeds), and the cost, side by side."""
    from lifelong.cli.common import load_llm
    from lifelong.continual.harness import run_benchmark, write_results
    from lifelong.continual.learners import BUILTIN, LEARNERS
    from lifelong.data.registry import STREAMS, get_stream

    key = stream.strip().lower().replace("-", "_")
    if key not in STREAMS:
        raise ConfigError(f"unknown stream {stream!r}",
                          hint=f"choose one of: {', '.join(s.replace('_', '-') for s in STREAMS)}")
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bad --seeds {seeds!r}", hint="comma-separated integers, e.g. 0,1,2") from None
    if not seed_list:
        raise ConfigError("no seeds given", hint="e.g. --seeds 0,1,2")
    names = [x.strip() for x in learners.split(",") if x.strip()]
    unknown = [n for n in names if n not in LEARNERS]
    if unknown or not names:
        raise ConfigError(f"unknown learner {', '.join(unknown) or '(none given)'}",
                          hint=f"choose from {', '.join(LEARNERS)}")
    options = _parse_options(option)
    get_stream(key, seed_list[0], **dict(options))  # a bad option fails before the model loads
    llm = load_llm(model or None) if any(n in BUILTIN for n in names) else None
    try:
        results, aggregates = run_benchmark(key, seed_list, names, llm, options=options, alone=alone,
                                            upper=upper, log=lambda m: err_console.print(f"[dim]{escape(m)}[/]"))
    finally:
        close = getattr(llm, "close", None)
        if close is not None:
            close()
    write_results(out, results, aggregates)
    for table in continual_tables(aggregates, alone=alone, seeds=seed_list, stream=key):
        console.print(table)
    for a in aggregates:
        print(f"{a['learner']} R_mean:")
        for row in a["R_mean"]:
            print("  " + " ".join("     ." if v is None else f"{v:6.3f}" for v in row))
    print(f"records: {out / 'records.jsonl'}")


def continual_tables(aggregates: list[dict[str, Any]], *, alone: bool, seeds: list[int],
                     stream: str) -> tuple[Table, Table]:
    """Scores and cost of each learner, two tables that fit 80 columns (mean±std over seeds;
    chrF with one decimal, accuracies with two)."""
    digits = 1 if aggregates and aggregates[0]["metric"] == "chrF" else 2
    metric = aggregates[0]["metric"] if aggregates else "score"

    def pm(stat: dict[str, float | None]) -> str:
        m, sd = stat.get("mean"), stat.get("std")
        if m is None:
            return "n/a"
        return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f}±{sd:.{digits}f}"

    def table(title: str, columns: list[str]) -> Table:
        t = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False)
        for c in columns:
            t.add_column(c, justify="left" if c == "learner" else "right", no_wrap=True)
        return t

    scores = table(f"{stream}: {metric}, mean±std over seeds {','.join(map(str, seeds))}",
                   ["learner", "average", "BWT", "forgetting", *(["alone"] if alone else []), "floor"])
    cost = table(f"{stream}: cost per learner (means over seeds)",
                 ["learner", "ctx tok/query", "memory tok", "state MB", "learn s", "s/query"])
    for a in aggregates:
        scores.add_row(escape(a["learner"]), pm(a["average"]), pm(a["bwt"]), pm(a["forgetting"]),
                       *([pm(a["alone_average"])] if alone else []), pm(a.get("floor_average", {})))
        cost.add_row(escape(a["learner"]), f"{a['context_tokens_per_query']:.0f}", f"{a['memory_tokens']:.0f}",
                     f"{a['state_bytes'] / 1e6:.1f}", f"{a['learn_s']:.1f}", f"{a['answer_s_per_query']:.2f}")
    return scores, cost


def consolidation_table(records: list[dict[str, Any]]) -> Table:
    """The rounds' scores in 80 columns: the world column only when there are several,
    note tokens per reader and seconds as whole numbers, the adapter in MB (the
    readers' whole context tokens are in records.jsonl)."""
    rows = [r for r in records if r.get("condition") != "total"]
    worlds = len({r["world"] for r in rows}) > 1
    table = Table(title="consolidation: readers after each round", title_justify="left", box=None,
                  padding=(0, 1), pad_edge=False)
    if worlds:
        table.add_column("world", no_wrap=True)
    table.add_column("round", no_wrap=True, justify="right")
    for name in ("condition", "similar", "round 1", "dissim", "note tok", "train s", "MB"):
        table.add_column(name, justify="left" if name == "condition" else "right", no_wrap=True)

    def whole(x: Any) -> str:
        return "" if x is None else f"{x:.0f}"

    for r in rows:
        cells = [str(r["round"]), r["condition"], _fmt(r["similar"]), _fmt(r["round1"]), _fmt(r["dissimilar"]),
                 whole(r["note_tokens"]), whole(r.get("train_s")),
                 "" if r.get("adapter_bytes") is None else f"{r['adapter_bytes'] / 1e6:.1f}"]
        table.add_row(*([str(r["world"])] if worlds else []), *cells)
    return table


def _fmt(x: Any) -> str:
    return "" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


@bench_app.command("serve")
def bench_serve_cmd(
    url: Annotated[str, typer.Option("--url", help="The running lifelong serve, e.g. http://127.0.0.1:8100.")],
    sessions: Annotated[str, typer.Option("--sessions", help="Comma-separated counts of concurrent "
                                          "sessions.")] = "1,8,64,256",
    requests: Annotated[int, typer.Option("--requests", min=1, help="Generate calls per session.")] = 4,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", min=0)] = 16,
    new_tokens: Annotated[int, typer.Option("--new-tokens", min=1)] = 8,
    vocab: Annotated[int, typer.Option("--vocab", min=2, help="Prompt ids are drawn below this.")] = 256,
    out: Annotated[str | None, typer.Option("--out", help="Write the results as JSON here.")] = None,
) -> None:
    """Load-test a running `lifelong serve`: tokens/s and p50/p99 latency per session count."""
    import os

    from lifelong.bench.serve import load_test

    try:
        counts = [int(s) for s in sessions.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"bad --sessions {sessions!r}", hint="e.g. 1,8,64") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"bad --sessions {sessions!r}", hint="e.g. 1,8,64")
    print(f"{'sessions':>8} {'requests':>8} {'gen tok/s':>10} {'written/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'rows/fwd':>8} {'errors':>6} {'busy %':>6} {'model %':>7} {'commit %':>8}",
          flush=True)

    def show(r) -> None:
        print(f"{r.sessions:>8} {r.requests:>8} {r.tokens_per_s:>10.1f} {r.written_per_s:>10.1f} "
              f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.rows_per_forward:>8.2f} {r.errors:>6} "
              f"{100 * r.engine_s / r.seconds:>6.1f} {100 * r.model_s / r.seconds:>7.1f} "
              f"{100 * r.commit_s / r.seconds:>8.1f}", flush=True)

    results = load_test(url, counts, requests=requests, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                        token=os.environ.get("LIFELONG_SERVE_TOKEN"), vocab=vocab, on_result=show)
    if out:
        from lifelong.atomic import atomic_write_text

        atomic_write_text(out, json.dumps([r.as_dict() for r in results], indent=2) + "\n")


@bench_app.command("serve-soak")
def bench_serve_soak_cmd(
    checkpoint: Annotated[str, typer.Argument(help="The checkpoint to serve (as for lifelong serve).")],
    store: Annotated[str, typer.Option("--store", help="sqlite (a fresh file), postgres (a temporary "
                                       "server) or a store URL.")] = "sqlite",
    seconds: Annotated[float, typer.Option("--seconds", min=1.0, help="How long to drive the server.")] = 120.0,
    sessions: Annotated[int, typer.Option("--sessions", min=1, max=512, help="Sessions, one client each.")] = 16,
    kill_min: Annotated[float, typer.Option("--kill-min", min=0.1, help="Shortest time between kills (s).")] = 2.0,
    kill_max: Annotated[float, typer.Option("--kill-max", min=0.1, help="Longest time between kills (s).")] = 8.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="The server's dtype (the replay uses it too).")] = "float64",
    out: Annotated[str | None, typer.Option("--out", help="Write the result as JSON here.")] = None,
) -> None:
    """Kill `lifelong serve` (SIGKILL) at random moments under random writes; count acknowledged
    writes lost and sessions whose state is not the replay of their own writes (both must be 0)."""
    import tempfile

    from lifelong.serve.memory.soak import soak

    if kill_max < kill_min:
        raise ConfigError("--kill-max is below --kill-min", hint="e.g. --kill-min 2 --kill-max 8")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {dtype!r}", hint="float64 (exact replay) or float32")
    if not Path(checkpoint).exists():
        raise ConfigError(f"no checkpoint at {checkpoint}", hint="pass a lifelong train checkpoint")
    pg = None
    work = tempfile.mkdtemp(prefix="lifelong-soak-")
    if store == "sqlite":
        url = f"sqlite:///{Path(work) / 'sessions.db'}"
    elif store == "postgres":
        from lifelong.context.store.temp_postgres import TempPostgres

        pg = TempPostgres(fsync=True)  # the server is killed, not PostgreSQL
        pg.start()
        url = pg.new_database()
    else:
        url = store
    try:
        r = soak(checkpoint, url, seconds=seconds, sessions=sessions, kill_every=(kill_min, kill_max), seed=seed,
                 dtype=dtype, workdir=work, progress=lambda m: err_console.print(f"[dim]{escape(m)}[/]"))
    finally:
        if pg is not None:
            pg.stop()
    for line in r.events:
        err_console.print(escape(line))
    print(f"store={r.store} seconds={r.seconds} sessions={r.sessions} kills={r.kills} "
          f"requests_acked={r.requests_acked} tokens_acked={r.tokens_acked} refused={r.requests_refused} "
          f"cut_off_applied={r.cut_off_applied} cut_off_dropped={r.cut_off_dropped}")
    print(f"acked_writes_lost={r.acked_writes_lost} version_errors={r.version_errors} "
          f"state_mismatches={r.state_mismatches} generation_mismatches={r.generation_mismatches} "
          f"max_state_diff={r.max_state_diff:.3g}")
    if out:
        from lifelong.atomic import atomic_write_text

        atomic_write_text(out, json.dumps(r.as_dict(), indent=2) + "\n")
    if not r.ok:
        raise typer.Exit(1)
