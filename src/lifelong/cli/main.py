"""Entry point of the ``lifelong`` command.

Problems the user can fix (``LifelongError``) are printed as one message with
what to do, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lifelong.errors import LifelongError

app = typer.Typer(
    name="lifelong",
    help="Continual learning for language models: context memory and weight memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks of speed and quality (commands, never timed tests).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

err_console = Console(stderr=True)


def _register_areas() -> None:
    # Each area module adds its commands; heavy imports stay inside the commands.
    from lifelong.cli import bench_tasks as bench_tasks_cli
    from lifelong.cli import context_data as context_data_cli
    from lifelong.cli import context_run as context_run_cli
    from lifelong.cli import demo as demo_cli
    from lifelong.cli import learn as learn_cli
    from lifelong.cli import llm as llm_cli
    from lifelong.cli import mcp as mcp_cli
    from lifelong.cli import memory as memory_cli
    from lifelong.cli import neural as neural_cli

    areas = (llm_cli, demo_cli, context_run_cli, context_data_cli, mcp_cli, learn_cli,
             memory_cli, neural_cli, bench_tasks_cli)
    for area in areas:
        area.register(app, bench_app)


_register_areas()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv)
    except LifelongError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            err_console.print(f"[yellow]what to do:[/] {exc.hint}")
        sys.exit(1)


if __name__ == "__main__":
    main()
