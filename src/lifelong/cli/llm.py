"""``lifelong llm …`` and ``lifelong bench llm``: the model layer from the shell."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    pass
