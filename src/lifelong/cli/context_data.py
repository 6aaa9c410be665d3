"""``lifelong notes …``, ``lifelong docs …`` and ``lifelong bench store``.

The model named by ``--model`` (default ``$LIFELONG_MODEL`` or ``local``) is
the tokenizer that counts notes and pages; it is loaded only by commands that
count tokens, so listing and rendering stay instant.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
notes_app = typer.Typer(help="Notes: short memories every future instance sees in its context.",
                        no_args_is_help=True)
docs_app = typer.Typer(help="Documentation: Markdown files a model reads on demand.", no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option("--store", envvar="LIFELONG_STORE", show_envvar=True,
                                               help="Store URL: sqlite:///path.db or postgresql://… "
                                               "(default: <data dir>/lifelong.db).")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", envvar="LIFELONG_NAMESPACE", show_envvar=True,
                                           help="Tenant/agent whose memory this is.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", envvar="LIFELONG_MODEL", show_envvar=True,
                                              help="Model whose tokenizer counts tokens (default: local).")]
BudgetOpt = Annotated[int | None, typer.Option("--budget", help="Notes budget in tokens "
                                               "(default: context window − task reserve).")]
ReserveOpt = Annotated[int | None, typer.Option("--task-reserve", help="Tokens kept for the task "
                                                "(default: half the context window).")]
AuthorOpt = Annotated[str, typer.Option("--author", envvar="LIFELONG_AUTHOR",
                                        help="Who writes (recorded as the author model).")]
SessionOpt = Annotated[str, typer.Option("--session", help="Source session id to record.")]
TaskOpt = Annotated[str, typer.Option("--task", help="Source task to record.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", envvar="LIFELONG_DOCS", show_envvar=True,
                                                   help="Docs root; each namespace is a folder in it "
                                                   "(default: <data dir>/docs).")]


class _LazyModel:
    """Loads the model on first use: only token counts need it. Loaded models
    are kept for the life of the process (one command per process from the
    shell; many when commands are called in-process), since loading is the
    slow part."""

    _loaded: dict[str | None, Any] = {}

    def __init__(self, spec: str | None) -> None:
        self.spec = spec or None

    @property
    def llm(self) -> Any:
        if self.spec not in self._loaded:
            from lifelong.llm import load_llm

            self._loaded[self.spec] = load_llm(self.spec)
        return self._loaded[self.spec]

    def count_tokens(self, text: str) -> int:
        return int(self.llm.count_tokens(text))


def _no_count(text: str) -> int:  # read-only commands never count
    raise AssertionError("this command does not count tokens")


class _Ctx:
    """Opens the store (and, if asked, the model) for one command and closes them."""

    def __init__(self, store_url: str | None, model: str | None) -> None:
        from lifelong.context import open_store

        self.store = open_store(store_url)
        self.model = _LazyModel(model)

    def notes(self, namespace: str, *, counting: bool, budget: int | None = None,
              reserve: int | None = None, author: str = "", create: bool = False):
        from lifelong.context import Notes, budget_for

        if not counting:
            return Notes(self.store, namespace, sys.maxsize, _no_count, create=create)
        budget = budget if budget is not None else budget_for(self.model.llm, reserve)
        return Notes(self.store, namespace, budget, self.model.count_tokens, model=author, create=create)

    def docs(self, namespace: str, workspace: Path | None, *, author: str = "", create: bool = False):
        from lifelong.context import Docs
        from lifelong.context.docs import default_docs_root

        root = workspace if workspace is not None else default_docs_root()
        return Docs(self.store, namespace, root, self.model.count_tokens, model=author, create=create)

    def __enter__(self) -> _Ctx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_json(obj: Any) -> None:
    console.print_json(json.dumps(obj, default=str))


def _text_arg(text: str | None, file: Path | None) -> str:
    if text is not None and file is not None:
        from lifelong.errors import ValidationError

        raise ValidationError("give the text or --file, not both")
    if file is not None:
        return file.read_text(encoding="utf-8")
    if text is not None:
        return text
    return sys.stdin.read()


# -- notes -----------------------------------------------------------------------------------


@notes_app.command("add")
def notes_add(
    text: Annotated[str, typer.Argument(help="The note: what a fresh instance would not know.")],
    tag: Annotated[list[str], typer.Option("--tag", "-t", help="Tag (repeatable).")] = [],  # noqa: B006
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    budget: BudgetOpt = None, task_reserve: ReserveOpt = None, author: AuthorOpt = "",
    session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Add a note (an exact or near duplicate of an active note is not added twice)."""
    with _Ctx(store, model) as c:
        notes = c.notes(namespace, counting=True, budget=budget, reserve=task_reserve, author=author,
                        create=True)
        r = notes.add(text, tags=tag, session=session, task=task)
        if r.created:
            console.print(f"added note {r.note.id} ({r.note.tokens} tokens)")
        else:
            console.print(f"not added: {r.duplicate} duplicate of note {r.note.id} "
                          f"(similarity {r.similarity:.2f}): {escape(r.note.text)}", highlight=False)


@notes_app.command("edit")
def notes_edit(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    old: Annotated[str, typer.Argument(help="Exact text to replace (must occur once).")],
    new: Annotated[str, typer.Argument(help="Replacement text.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    budget: BudgetOpt = None, task_reserve: ReserveOpt = None, author: AuthorOpt = "",
    session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Replace text in a note, str_replace style."""
    with _Ctx(store, model) as c:
        n = c.notes(namespace, counting=True, budget=budget, reserve=task_reserve, author=author)
        note = n.edit(note_id, old, new, session=session, task=task)
        console.print(f"note {note.id}: {escape(note.text)}", highlight=False)


@notes_app.command("supersede")
def notes_supersede(
    note_ids: Annotated[list[int], typer.Argument(help="Ids of the notes the new one replaces.")],
    text: Annotated[str, typer.Option("--text", help="The new note.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tags (default: merged).")] = None,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    budget: BudgetOpt = None, task_reserve: ReserveOpt = None, author: AuthorOpt = "",
    session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Replace one or more notes by a new one; the old ones stay, linked, in history."""
    with _Ctx(store, model) as c:
        n = c.notes(namespace, counting=True, budget=budget, reserve=task_reserve, author=author)
        note = n.supersede(note_ids, text, tags=tag or None, session=session, task=task)
        console.print(f"note {note.id} supersedes {', '.join(map(str, note_ids))}")


@notes_app.command("delete")
def notes_delete(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    author: AuthorOpt = "", session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Soft-delete a note: it leaves the block, its history stays (see `purge`)."""
    with _Ctx(store, model) as c:
        c.notes(namespace, counting=True, budget=sys.maxsize, author=author).delete(
            note_id, reason=reason, session=session, task=task)
        console.print(f"deleted note {note_id} (restore with `lifelong notes restore {note_id}`)")


@notes_app.command("restore")
def notes_restore(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    budget: BudgetOpt = None, task_reserve: ReserveOpt = None, author: AuthorOpt = "",
) -> None:
    """Bring a deleted or superseded note back into the block."""
    with _Ctx(store, model) as c:
        c.notes(namespace, counting=True, budget=budget, reserve=task_reserve, author=author).restore(note_id)
        console.print(f"restored note {note_id}")


@notes_app.command("purge")
def notes_purge(
    note_ids: Annotated[list[int], typer.Argument(help="Ids of deleted or superseded notes.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: purging cannot be undone.")] = False,
    store: StoreOpt = None, namespace: NamespaceOpt = "default",
) -> None:
    """Really delete notes and their history. Irreversible; needs --yes."""
    from lifelong.errors import ValidationError

    if not yes:
        raise ValidationError("purge removes notes and their history for good",
                              hint="add --yes to confirm, or use `lifelong notes delete` (reversible)")
    with _Ctx(store, None) as c:
        n = c.notes(namespace, counting=False)
        for note_id in note_ids:
            n.get(note_id)  # all must exist before any is purged
        for note_id in note_ids:
            n.purge(note_id)
        console.print(f"purged {len(note_ids)} note(s)")


@notes_app.command("list")
def notes_list(
    all_: Annotated[bool, typer.Option("--all", help="Include superseded and deleted notes.")] = False,
    status: Annotated[str | None, typer.Option("--status", help="active, superseded or deleted.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only notes with this tag.")] = None,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", as_json: JsonOpt = False,
) -> None:
    """List notes (active ones unless --all or --status)."""
    with _Ctx(store, None) as c:
        items = c.notes(namespace, counting=False).list(None if all_ else (status or "active"), tag=tag)
    if as_json:
        _print_json([asdict(n) for n in items])
        return
    table = Table("id", "status", "tokens", "tags", "text", "updated", box=None)
    for n in items:
        table.add_row(str(n.id), n.status, str(n.tokens), ",".join(n.tags), escape(n.text), _when(n.updated))
    console.print(table)


@notes_app.command("show")
def notes_show(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", as_json: JsonOpt = False,
) -> None:
    """A note with its full history."""
    with _Ctx(store, None) as c:
        n = c.notes(namespace, counting=False)
        note, events = n.get(note_id), n.history(note_id)
    if as_json:
        _print_json({"note": asdict(note), "history": [asdict(e) for e in events]})
        return
    console.print(f"[bold]note {note.id}[/] ({note.status}"
                  + (f", superseded by {note.superseded_by}" if note.superseded_by else "") + ")")
    console.print(note.text, markup=False, highlight=False)
    console.print(escape(f"tags: {', '.join(note.tags) or '-'} · {note.tokens} tokens · by "
                         f"{note.model or '-'} · session {note.session or '-'} · task {note.task or '-'}"),
                  style="dim")
    table = Table("when", "change", "by", "session", "text", box=None)
    for e in events:
        text = e.new_text if e.kind != "edit" else f"{e.old_text} → {e.new_text}"
        if e.kind in ("supersede", "superseded", "duplicate") and e.related_id:
            text = f"(note {e.related_id}) {text}"
        table.add_row(_when(e.at), e.kind, escape(e.model or "-"), escape(e.session or "-"), escape(text))
    console.print(table)


notes_app.command("history", help="A note's full history (same as `show`).")(notes_show)


@notes_app.command("render")
def notes_render(store: StoreOpt = None, namespace: NamespaceOpt = "default") -> None:
    """Print the notes block exactly as a model sees it."""
    with _Ctx(store, None) as c:
        sys.stdout.write(c.notes(namespace, counting=False).render())


@notes_app.command("stats")
def notes_stats(
    window_days: Annotated[float, typer.Option("--window-days", help="Growth measured over this many "
                                               "days of history.")] = 30.0,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", model: ModelOpt = None,
    budget: BudgetOpt = None, task_reserve: ReserveOpt = None, as_json: JsonOpt = False,
) -> None:
    """Tokens used, free budget, growth per day and days left until the ceiling."""
    with _Ctx(store, model) as c:
        s = c.notes(namespace, counting=True, budget=budget, reserve=task_reserve).stats(window_days=window_days)
    if as_json:
        _print_json(asdict(s))
        return
    pct = 100 * s.tokens_used / s.budget_tokens
    console.print(f"namespace      {s.namespace}\nactive notes   {s.active_notes}\n"
                  f"tokens used    {s.tokens_used} of {s.budget_tokens} ({pct:.1f} %)\n"
                  f"free           {s.free_tokens}\n"
                  f"growth         {s.growth_per_day:.1f} tokens/day (over {s.window_days:.1f} days)\n"
                  f"days left      " + (f"{s.days_left:.1f}" if s.days_left is not None else "∞ (not growing)"),
                  highlight=False)


@notes_app.command("export")
def notes_export(
    agents_md: Annotated[Path, typer.Option("--agents-md", help="Write the notes block as this AGENTS.md file.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default",
) -> None:
    """Export the notes block (as an AGENTS.md file any coding agent reads)."""
    with _Ctx(store, None) as c:
        path = c.notes(namespace, counting=False).export_agents_md(agents_md)
    console.print(escape(f"wrote {path}"), highlight=False)


@notes_app.command("namespaces")
def notes_namespaces(store: StoreOpt = None) -> None:
    """List the namespaces in the store."""
    with _Ctx(store, None) as c:
        for name in c.store.namespaces():
            console.print(name, markup=False, highlight=False)


# -- docs ------------------------------------------------------------------------------------


@docs_app.command("tree")
def docs_tree(store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
              as_json: JsonOpt = False) -> None:
    """Every document with its description."""
    with _Ctx(store, None) as c:
        items = c.docs(namespace, workspace).tree()
    if as_json:
        _print_json([asdict(d) for d in items])
        return
    for d in items:
        extra = f"  [red](front matter: {escape(d.error)})[/]" if d.error else ""
        console.print(f"{escape(d.path)}  [dim]{escape(d.description)}[/]{extra}", highlight=False)


@docs_app.command("search")
def docs_search(
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    limit: Annotated[int, typer.Option("--limit", "-k", help="Most results.")] = 10,
    semantic: Annotated[bool, typer.Option(
        "--semantic", help="Search by meaning with sentence embeddings (needs the embeddings extra).")] = False,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search over the documents, or by meaning with --semantic."""
    with _Ctx(store, None) as c:
        docs = c.docs(namespace, workspace)
        hits = docs.semantic_search(query, limit) if semantic else docs.search(query, limit)
    if as_json:
        _print_json([asdict(h) for h in hits])
        return
    for h in hits:
        console.print(f"[bold]{escape(h.path)}[/]  [dim]{escape(h.description)}[/]\n  {escape(h.snippet)}",
                      highlight=False)


@docs_app.command("read")
def docs_read(
    path: Annotated[str, typer.Argument(help="Document path, relative to the namespace's folder.")],
    offset: Annotated[int, typer.Option("--offset", help="Character offset to start at.")] = 0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens to print.")] = 1024,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    model: ModelOpt = None,
) -> None:
    """Print a page of a document; the last line says where the next page starts."""
    with _Ctx(store, model) as c:
        page = c.docs(namespace, workspace).read(path, offset, max_tokens)
    sys.stdout.write(page.text)
    if page.text and not page.text.endswith("\n"):
        sys.stdout.write("\n")
    more = f"more: --offset {page.next_offset}" if page.more else "end of document"
    Console(stderr=True).print(escape(f"{page.path} {page.offset}-{page.next_offset} of {page.total_chars} "
                                      f"chars, {page.tokens} tokens; {more}"), style="dim", highlight=False)


@docs_app.command("write")
def docs_write(
    path: Annotated[str, typer.Argument(help="Document path (.md added if missing).")],
    text: Annotated[str | None, typer.Argument(help="Body, or whole file with front matter "
                                                "(default: --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="One-line summary.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag (repeatable).")] = None,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    author: AuthorOpt = "", session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Create or overwrite a document."""
    body = _text_arg(text, file)
    with _Ctx(store, None) as c:
        info = c.docs(namespace, workspace, author=author, create=True).write(
            path, body, description=description, tags=tag or None, session=session, task=task)
    console.print(escape(f"wrote {info.path} ({info.size} bytes)"), highlight=False)


@docs_app.command("append")
def docs_append(
    path: Annotated[str, typer.Argument(help="Document path.")],
    text: Annotated[str | None, typer.Argument(help="Text to append (default: --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file.")] = None,
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    author: AuthorOpt = "", session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Append text to the end of a document."""
    body = _text_arg(text, file)
    with _Ctx(store, None) as c:
        info = c.docs(namespace, workspace, author=author).append(path, body, session=session, task=task)
    console.print(escape(f"appended to {info.path} ({info.size} bytes)"), highlight=False)


@docs_app.command("str-replace")
def docs_str_replace(
    path: Annotated[str, typer.Argument(help="Document path.")],
    old: Annotated[str, typer.Argument(help="Exact text to replace (must occur once).")],
    new: Annotated[str, typer.Argument(help="Replacement text.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    author: AuthorOpt = "", session: SessionOpt = "", task: TaskOpt = "",
) -> None:
    """Replace text that occurs exactly once in a document."""
    with _Ctx(store, None) as c:
        info = c.docs(namespace, workspace, author=author).str_replace(path, old, new, session=session, task=task)
    console.print(escape(f"edited {info.path}"), highlight=False)


@docs_app.command("history")
def docs_history(
    path: Annotated[str, typer.Argument(help="Document path.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Earlier versions of a document (restore one with `docs restore`)."""
    with _Ctx(store, None) as c:
        versions = c.docs(namespace, workspace).history(path)
    if as_json:
        _print_json([asdict(v) for v in versions])
        return
    table = Table("version", "replaced at", "by change", "author", "chars", box=None)
    for v in versions:
        table.add_row(str(v.id), _when(v.at), v.change, escape(v.model or "-"), str(len(v.text)))
    console.print(table)


@docs_app.command("restore")
def docs_restore(
    path: Annotated[str, typer.Argument(help="Document path.")],
    version: Annotated[int, typer.Argument(help="Version id from `docs history`.")],
    store: StoreOpt = None, namespace: NamespaceOpt = "default", workspace: WorkspaceOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Put an earlier version of a document back (the current one is kept as a version)."""
    with _Ctx(store, None) as c:
        info = c.docs(namespace, workspace, author=author).restore(path, version)
    console.print(escape(f"restored {info.path} to version {version}"), highlight=False)


# -- bench -----------------------------------------------------------------------------------


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
    from lifelong.context.bench_store import BenchConfig, run_bench

    cfg = BenchConfig(n_notes=notes, n_docs=docs, n_queries=queries, n_writes=writes, seed=seed)
    err = Console(stderr=True)
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


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(notes_app, name="notes")
    app.add_typer(docs_app, name="docs")
    bench_app.command("store")(bench_store_cmd)

