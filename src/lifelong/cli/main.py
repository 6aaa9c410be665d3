"""Entry point of the ``lifelong`` command.

Problems the user can fix (``LifelongError``) are printed as one message with
what to do, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings

import typer
from rich.markup import escape

from lifelong.cli.common import err_console
from lifelong.errors import BudgetWarning, LifelongError

app = typer.Typer(
    name="lifelong",
    help="Continual learning for language models: context memory and weight memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_areas() -> None:
    # Each area module adds its commands; heavy imports stay inside the commands.
    from lifelong.cli import adapter, demo, docs, learn, llm, mcp, notes, run, train
    from lifelong.cli.bench import bench_app

    for area in (llm, demo, run, notes, docs, mcp, learn, train, adapter):
        area.register(app)
    app.add_typer(bench_app, name="bench")


_register_areas()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # Warnings meant for users (a notes block over budget) read like the errors: one line.
    if issubclass(category, BudgetWarning):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    try:
        app(args=argv)
    except LifelongError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            err_console.print(f"[yellow]what to do:[/] {exc.hint}")
        sys.exit(1)


if __name__ == "__main__":
    main()
