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
from lifelong.errors import LifelongError, LifelongWarning
from lifelong.redact import redact

app = typer.Typer(
    name="lifelong",
    help="Continual learning for language models: context memory and weight memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help (click's): reads at 80 columns, no column of types beside every option.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from lifelong import __version__

        print(f"lifelong {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Continual learning for language models: context memory and weight memory."""


def _register_areas() -> None:
    # Each area module adds its commands; heavy imports stay inside the commands.
    from lifelong.cli import adapter, demo, docs, learn, llm, mcp, notes, proxy, run, serve, train
    from lifelong.cli.bench import bench_app

    for area in (llm, demo, run, notes, docs, mcp, proxy, serve, learn, train, adapter):
        area.register(app)
    app.add_typer(bench_app, name="bench")


_register_areas()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # Warnings meant for users (a notes block over budget, a damaged checkpoint
    # skipped) read like the errors: one line.
    if issubclass(category, LifelongWarning):
        err_console.print(f"[yellow]warning:[/] {escape(redact(str(message)))}", highlight=False)
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    # An argument that was not UTF-8 reaches Python as lone surrogates; echoing it
    # (a usage error quotes it) must show it escaped, not crash the printer.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        app(args=argv)
    except LifelongError as exc:
        # The message quotes what users, files and models wrote: never read it as
        # markup ('[/x].md' is a path, not a closing tag), never show a secret.
        err_console.print(f"[bold red]error:[/] {escape(redact(exc.message))}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]what to do:[/] {escape(redact(exc.hint))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
