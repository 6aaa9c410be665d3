"""``lifelong bench run|sample|data|tokenizers|generators``: long-context benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lifelong.errors import ConfigError


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


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
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
        chunk: int = typer.Option(
            0, help="read prompts this many tokens at a time, carrying the state (0: whole)"
        ),
    ) -> None:
        """Accuracy by length of a trained model on a benchmark suite: table, JSON and PNG."""
        from rich.console import Console
        from rich.table import Table

        from lifelong.bench import evaluate as ev
        from lifelong.bench.tasks import parse_lengths, suite_tasks

        console = Console()
        names = suite_tasks(suite)
        lens = parse_lengths(lengths)
        if not model.exists():
            raise ConfigError(
                f"no checkpoint at {model}", hint="train one with `lifelong train CONFIG`"
            )
        try:
            from lifelong.neural.train import load_checkpoint
        except ImportError as exc:
            raise ConfigError(
                f"cannot load checkpoints: {exc}",
                hint="install the neural extra: pip install 'lifelong[neural]'",
            ) from exc
        net, meta = load_checkpoint(str(model), device=device)
        tasks = ev.tasks_for_model(names, meta, _parse_options(option))
        with console.status("evaluating") as status:
            report = ev.evaluate(
                net, tasks, lens, n, seed, device, progress=status.update, chunk=chunk or None
            )
        report.update(model=str(model), suite=suite, title=f"{model.stem}: {suite}")
        header, rows = ev.table_rows(report)
        table = Table(title=f"accuracy by length — {model.name} on {suite} (n={n}, seed={seed})")
        for h in header:
            table.add_column(h, justify="left" if h == "task" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        stem = f"{model.stem}-{suite.replace(',', '+')}"
        json_path, png_path = ev.write_report(report, out, stem)
        console.print(f"wrote {json_path} and {png_path}")

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

        from lifelong.bench.tasks import get_task, parse_length, suite_tasks

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

        from lifelong.bench import haystack
        from lifelong.bench.tokenizer import load_tokenizer

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

        from lifelong.bench import haystack
        from lifelong.bench.tasks import get_task

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
        from lifelong.bench.tasks import get_task, parse_lengths, suite_tasks

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
