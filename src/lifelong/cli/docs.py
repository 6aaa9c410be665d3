"""``lifelong docs …``: Markdown documents a model reads on demand, a page at a time."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lifelong.cli.common import (
    JsonOpt,
    MemoryArgs,
    console,
    err_console,
    memory_options,
    print_json,
    text_arg,
    when,
)

docs_app = typer.Typer(help="Documentation: Markdown files a model reads on demand.", no_args_is_help=True)


@docs_app.command("tree")
@memory_options("workspace")
def docs_tree(as_json: JsonOpt = False, *, mem: MemoryArgs) -> None:
    """Every document with its description."""
    with mem.open() as c:
        docs = c.docs()
        items = docs.tree()
    if docs.unindexed:  # said on stderr, so --json output stays one document
        err_console.print(escape(f"not indexed ({len(docs.unindexed)}), names that are no valid document "
                                 f"path (not UTF-8, control characters, …): {', '.join(docs.unindexed[:10])}"
                                 + (" …" if len(docs.unindexed) > 10 else "")), style="yellow", highlight=False)
    if as_json:
        print_json([asdict(d) for d in items])
        return
    for d in items:
        extra = f"  [red](front matter: {escape(d.error)})[/]" if d.error else ""
        console.print(f"{escape(d.path)}  [dim]{escape(d.description)}[/]{extra}", highlight=False)


@docs_app.command("search")
@memory_options("workspace")
def docs_search(
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    limit: Annotated[int, typer.Option("--limit", "-k", help="Most results.")] = 10,
    semantic: Annotated[bool, typer.Option(
        "--semantic", help="Search by meaning with sentence embeddings (needs the embeddings extra).")] = False,
    as_json: JsonOpt = False,
    *, mem: MemoryArgs,
) -> None:
    """Full-text search over the documents, or by meaning with --semantic."""
    with mem.open() as c:
        docs = c.docs()
        hits = docs.semantic_search(query, limit) if semantic else docs.search(query, limit)
    if as_json:
        print_json([asdict(h) for h in hits])
        return
    for h in hits:
        console.print(f"[bold]{escape(h.path)}[/]  [dim]{escape(h.description)}[/]\n  {escape(h.snippet)}",
                      highlight=False)


@docs_app.command("read")
@memory_options("model", "workspace")
def docs_read(
    path: Annotated[str, typer.Argument(help="Document path, relative to the namespace's folder.")],
    offset: Annotated[int, typer.Option("--offset", help="Character offset to start at.")] = 0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens to print.")] = 1024,
    *, mem: MemoryArgs,
) -> None:
    """Print a page of a document; the last line says where the next page starts."""
    with mem.open() as c:
        page = c.docs().read(path, offset, max_tokens)
    sys.stdout.write(page.text)
    if page.text and not page.text.endswith("\n"):
        sys.stdout.write("\n")
    more = f"more: --offset {page.next_offset}" if page.more else "end of document"
    Console(stderr=True).print(escape(f"{page.path} {page.offset}-{page.next_offset} of {page.total_chars} "
                                      f"chars, {page.tokens} tokens; {more}"), style="dim", highlight=False)


@docs_app.command("write")
@memory_options("workspace", "provenance")
def docs_write(
    path: Annotated[str, typer.Argument(help="Document path (.md added if missing).")],
    text: Annotated[str | None, typer.Argument(help="Body, or whole file with front matter "
                                                "(default: --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="One-line summary.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag (repeatable).")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Create or overwrite a document."""
    body = text_arg(text, file)
    with mem.open() as c:
        info = c.docs(create=True).write(
            path, body, description=description, tags=tag or None, session=mem.session, task=mem.task)
    console.print(escape(f"wrote {info.path} ({info.size} bytes)"), highlight=False)


@docs_app.command("append")
@memory_options("workspace", "provenance")
def docs_append(
    path: Annotated[str, typer.Argument(help="Document path.")],
    text: Annotated[str | None, typer.Argument(help="Text to append (default: --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file.")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Append text to the end of a document."""
    body = text_arg(text, file)
    with mem.open() as c:
        info = c.docs().append(path, body, session=mem.session, task=mem.task)
    console.print(escape(f"appended to {info.path} ({info.size} bytes)"), highlight=False)


@docs_app.command("str-replace")
@memory_options("workspace", "provenance")
def docs_str_replace(
    path: Annotated[str, typer.Argument(help="Document path.")],
    old: Annotated[str, typer.Argument(help="Exact text to replace (must occur once).")],
    new: Annotated[str, typer.Argument(help="Replacement text.")],
    *, mem: MemoryArgs,
) -> None:
    """Replace text that occurs exactly once in a document."""
    with mem.open() as c:
        info = c.docs().str_replace(path, old, new, session=mem.session, task=mem.task)
    console.print(escape(f"edited {info.path}"), highlight=False)


@docs_app.command("history")
@memory_options("workspace")
def docs_history(
    path: Annotated[str, typer.Argument(help="Document path.")],
    as_json: JsonOpt = False,
    *, mem: MemoryArgs,
) -> None:
    """Earlier versions of a document (restore one with `docs restore`)."""
    with mem.open() as c:
        versions = c.docs().history(path)
    if as_json:  # the text, not the stored bytes (the same unless the file was not UTF-8)
        print_json([{k: x for k, x in asdict(v).items() if k != "data"} for v in versions])
        return
    table = Table("version", "replaced at", "by change", "author", "chars", box=None)
    for v in versions:
        table.add_row(str(v.id), when(v.at), v.change, escape(v.model or "-"), str(len(v.text)))
    console.print(table)


@docs_app.command("restore")
@memory_options("workspace", "author")
def docs_restore(
    path: Annotated[str, typer.Argument(help="Document path.")],
    version: Annotated[int, typer.Argument(help="Version id from `docs history`.")],
    *, mem: MemoryArgs,
) -> None:
    """Put an earlier version of a document back (the current one is kept as a version)."""
    with mem.open() as c:
        info = c.docs().restore(path, version)
    console.print(escape(f"restored {info.path} to version {version}"), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(docs_app, name="docs")
