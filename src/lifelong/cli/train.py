"""``lifelong train CONFIG``: train a model on a task, with a progress bar and a loss plot."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape


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
    import os

    from lifelong.atomic import atomic_write_bytes
    from lifelong.cli.common import console
    from lifelong.cli.plots import loss_curve_png
    from lifelong.train.config import load_config
    from lifelong.train.lm import train

    cfg = load_config(config)
    given = {"steps": steps, "out_dir": out_dir, "device": device, "seed": seed}
    overrides = {k: v for k, v in given.items() if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    main = os.environ.get("RANK", "0") == "0"
    bar = StepBar(cfg.name) if progress and main else None
    try:
        result = train(cfg, until_step=stop_at, resume=resume, on_step=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if main:
        metrics = result.out_dir / "metrics.jsonl"
        if metrics.exists():
            atomic_write_bytes(result.out_dir / "loss.png", loss_curve_png(metrics, cfg.name))
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        console.print(
            f"[bold]{escape(cfg.name)}[/]: step {result.step}/{cfg.train.steps}, last loss {last}, "
            f"{result.model.num_params():,} parameters → {escape(str(result.out_dir))}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


class StepBar:
    """A rich progress bar showing the step and the latest loss."""

    def __init__(self, name: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"[bold]{escape(name)}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task(name, total=None, loss=float("nan"))

    def update(self, step: int, total: int, loss: float) -> None:
        """The training loop's ``on_step`` callback."""
        self.progress.update(self.task, completed=step, total=total, loss=loss)

    def close(self) -> None:
        self.progress.stop()
