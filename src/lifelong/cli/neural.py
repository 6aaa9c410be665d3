"""Commands of the neural models: ``lifelong train`` and ``lifelong bench models``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("train")(train_command)
    bench_app.command("models")(bench_models_command)


def train_command(
    config: Path = typer.Argument(
        ..., help="Run config (.toml or .yaml) with model, task and train tables."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in out_dir."
    ),
    steps: int | None = typer.Option(None, help="Override train.steps (the schedule length)."),
    stop_at: int | None = typer.Option(
        None, "--stop-at", help="Stop (with a checkpoint) after this step."
    ),
    out_dir: str | None = typer.Option(None, "--out-dir", help="Override train.out_dir."),
    device: str | None = typer.Option(None, help="Override train.device: auto, cpu, cuda."),
    seed: int | None = typer.Option(None, help="Override train.seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a model on a task.

    Several GPUs: torchrun --nproc_per_node N -m lifelong.cli.main train CONFIG.
    """
    import dataclasses

    from rich.console import Console

    from lifelong.neural.configs import load_config
    from lifelong.neural.train import train

    cfg = load_config(config)
    given = {"steps": steps, "out_dir": out_dir, "device": device, "seed": seed}
    overrides = {k: v for k, v in given.items() if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    result = train(cfg, until_step=stop_at, resume=resume, progress=progress)
    import os

    if os.environ.get("RANK", "0") == "0":
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        Console().print(
            f"[bold]{cfg.name}[/]: step {result.step}/{cfg.train.steps}, last loss {last}, "
            f"{result.model.num_params():,} parameters → {result.out_dir}"
        )


def bench_models_command(
    configs: list[Path] = typer.Argument(..., help="Run configs whose [model] tables to measure."),
    lengths: str = typer.Option(
        "1k,2k,4k,8k", help="Inference lengths (tokens), comma-separated; k = 1024."
    ),
    chunk: int = typer.Option(512, help="Streaming chunk size for inference."),
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

    from rich.console import Console
    from rich.table import Table

    from lifelong.atomic import atomic_write_text
    from lifelong.neural.baselines import measure_model
    from lifelong.neural.configs import load_config

    import torch

    if threads:
        torch.set_num_threads(threads)
    lens = [_parse_length(s) for s in lengths.split(",") if s.strip()]
    console = Console(width=max(Console().width, 110))  # the table needs the room
    rows = []
    for path in configs:
        cfg = load_config(path)
        console.print(f"measuring {cfg.name} ({cfg.model.kind}) …")
        rows.append(
            measure_model(
                cfg,
                lengths=lens,
                chunk=chunk,
                train_steps=train_steps,
                batch_size=batch_size or cfg.train.batch_size,
                seq_len=seq_len or cfg.train.seq_len,
                device=device,
                cpu_peak=peak_memory,
            )
        )
    title = f"models on {device}: training, and streaming inference in chunks of {chunk}"
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
            cells += [_fmt_len(x["length"]), f"{x['tokens_per_s']:,.0f}", f"{x['state_mb']:.2f}"]
            if show_peak:
                cells.append(f"{x['peak_mb']:.1f}")
            table.add_row(*cells)
    console.print(table)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rows, indent=2))


def _parse_length(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


def _fmt_len(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)
