"""``lifelong notes …``: short memories every future instance sees in its context."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lifelong.cli.common import (
    JsonOpt,
    MemoryArgs,
    StoreOpt,
    console,
    memory_options,
    print_json,
    when,
    where_options,
)

notes_app = typer.Typer(help="Notes: short memories every future instance sees in its context.",
                        no_args_is_help=True)


@notes_app.command("add")
@memory_options("model", "budget", "provenance")
def notes_add(
    text: Annotated[str, typer.Argument(help="The note: what a fresh instance would not know.")],
    tag: Annotated[list[str], typer.Option("--tag", "-t", help="Tag (repeatable).")] = [],  # noqa: B006,
    *, mem: MemoryArgs,
) -> None:
    """Add a note (an exact or near duplicate of an active note is not added twice)."""
    with mem.open(create=True) as c:
        notes = c.notes(counting=True, create=True)
        r = notes.add(text, tags=tag, session=mem.session, task=mem.task)
        if r.created:
            console.print(f"added note {r.note.id} ({r.note.tokens} tokens)")
        else:
            console.print(f"not added: {r.duplicate} duplicate of note {r.note.id} "
                          f"(similarity {r.similarity:.2f}): {escape(r.note.text)}", highlight=False)


@notes_app.command("edit")
@memory_options("model", "budget", "provenance")
def notes_edit(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    old: Annotated[str, typer.Argument(help="Exact text to replace (must occur once).")],
    new: Annotated[str, typer.Argument(help="Replacement text.")],
    *, mem: MemoryArgs,
) -> None:
    """Replace text in a note, str_replace style."""
    with mem.open() as c:
        n = c.notes(counting=True)
        note = n.edit(note_id, old, new, session=mem.session, task=mem.task)
        console.print(f"note {note.id}: {escape(note.text)}", highlight=False)


@notes_app.command("supersede")
@memory_options("model", "budget", "provenance")
def notes_supersede(
    note_ids: Annotated[list[int], typer.Argument(help="Ids of the notes the new one replaces.")],
    text: Annotated[str, typer.Option("--text", help="The new note.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tags (default: merged).")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Replace one or more notes by a new one; the old ones stay, linked, in history."""
    with mem.open() as c:
        n = c.notes(counting=True)
        note = n.supersede(note_ids, text, tags=tag or None, session=mem.session, task=mem.task)
        console.print(f"note {note.id} supersedes {', '.join(map(str, note_ids))}")


@notes_app.command("delete")
@memory_options("model", "provenance")
def notes_delete(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    *, mem: MemoryArgs,
) -> None:
    """Soft-delete a note: it leaves the block, its history stays (see `purge`)."""
    with mem.open() as c:
        c.notes(counting=True, budget=sys.maxsize).delete(
            note_id, reason=reason, session=mem.session, task=mem.task)
        console.print(escape(f"deleted note {note_id} (restore it with: lifelong notes restore {note_id}"
                             f"{where_options(mem)})"), highlight=False)


@notes_app.command("restore")
@memory_options("model", "budget", "author")
def notes_restore(note_id: Annotated[int, typer.Argument(help="Note id.")], *, mem: MemoryArgs) -> None:
    """Bring a deleted or superseded note back into the block."""
    with mem.open() as c:
        c.notes(counting=True).restore(note_id)
        console.print(f"restored note {note_id}")


@notes_app.command("purge")
@memory_options()
def notes_purge(
    note_ids: Annotated[list[int], typer.Argument(help="Ids of deleted or superseded notes.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: purging cannot be undone.")] = False,
    *, mem: MemoryArgs,
) -> None:
    """Really delete notes and their history. Irreversible; needs --yes."""
    from lifelong.errors import ValidationError

    if not yes:
        raise ValidationError("purge removes notes and their history for good",
                              hint="add --yes to confirm, or use `lifelong notes delete` (reversible)")
    with mem.open() as c:
        n = c.notes(counting=False)
        for note_id in note_ids:
            n.get(note_id)  # all must exist before any is purged
        for note_id in note_ids:
            n.purge(note_id)
        console.print(f"purged {len(note_ids)} note(s)")


@notes_app.command("list")
@memory_options()
def notes_list(
    all_: Annotated[bool, typer.Option("--all", help="Include superseded and deleted notes.")] = False,
    status: Annotated[str | None, typer.Option("--status", help="active, superseded or deleted.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only notes with this tag.")] = None,
    as_json: JsonOpt = False,
    *, mem: MemoryArgs,
) -> None:
    """List notes (active ones unless --all or --status)."""
    with mem.open() as c:
        items = c.notes(counting=False).list(None if all_ else (status or "active"), tag=tag)
    if as_json:
        print_json([asdict(n) for n in items])
        return
    table = Table("id", "status", "tokens", "tags", "text", "updated", box=None)
    for n in items:
        table.add_row(str(n.id), n.status, str(n.tokens), ",".join(n.tags), escape(n.text), when(n.updated))
    console.print(table)


@notes_app.command("show")
@memory_options()
def notes_show(
    note_id: Annotated[int, typer.Argument(help="Note id.")],
    as_json: JsonOpt = False,
    *, mem: MemoryArgs,
) -> None:
    """A note with its full history."""
    with mem.open() as c:
        n = c.notes(counting=False)
        note, events = n.get(note_id), n.history(note_id)
    if as_json:
        print_json({"note": asdict(note), "history": [asdict(e) for e in events]})
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
        table.add_row(when(e.at), e.kind, escape(e.model or "-"), escape(e.session or "-"), escape(text))
    console.print(table)


notes_app.command("history", help="A note's full history (same as `show`).")(notes_show)


@notes_app.command("render")
@memory_options("model", "budget")
def notes_render(*, mem: MemoryArgs) -> None:
    """Print the notes block exactly as a model sees it (with --note-budget, warn if it is over)."""
    with mem.open() as c:
        sys.stdout.write(c.notes(counting=mem.note_budget is not None).render())


@notes_app.command("stats")
@memory_options("model", "budget")
def notes_stats(
    window_days: Annotated[float, typer.Option("--window-days", help="Growth measured over this many "
                                               "days of history.")] = 30.0,
    as_json: JsonOpt = False,
    *, mem: MemoryArgs,
) -> None:
    """Tokens used, free budget, growth per day and days left until the ceiling."""
    with mem.open() as c:
        s = c.notes(counting=True).stats(window_days=window_days)
    if as_json:
        print_json(asdict(s))
        return
    from lifelong.context.notes import MIN_HISTORY_DAYS

    pct = 100 * s.tokens_used / s.budget_tokens
    if s.days_left is not None:
        left = f"{s.days_left:.1f}"
    elif s.history_days < MIN_HISTORY_DAYS:
        left = f"not estimated yet ({_span(s.history_days)} of history; needs a day)"
    else:
        left = "∞ (not growing)"
    console.print(f"namespace      {escape(s.namespace)}\nactive notes   {s.active_notes}\n"
                  f"tokens used    {s.tokens_used} of {s.budget_tokens} ({pct:.1f} %)\n"
                  f"free           {s.free_tokens}\n"
                  f"growth         {s.growth_per_day:.1f} tokens/day (over {s.window_days:.1f} days)\n"
                  f"days left      {left}", highlight=False)


def _span(days: float) -> str:
    minutes = days * 1440
    return f"{minutes:.0f} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


@notes_app.command("export")
@memory_options()
def notes_export(
    agents_md: Annotated[Path | None, typer.Option("--agents-md", help="Write the notes into this AGENTS.md "
                                                   "file (a marked section; the rest is kept).")] = None,
    claude_md: Annotated[Path | None, typer.Option("--claude-md", help="The same for a CLAUDE.md file.")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Export the notes block into the files coding agents read (AGENTS.md, CLAUDE.md).

    The notes go in a section between marker comments: what a person wrote in the
    file is kept, and exporting again replaces only that section.
    """
    from lifelong.errors import ValidationError

    targets = [p for p in (agents_md, claude_md) if p is not None]
    if not targets:
        raise ValidationError("nothing to export to", hint="give --agents-md AGENTS.md and/or --claude-md CLAUDE.md")
    with mem.open() as c:
        notes = c.notes(counting=False)
        for target in targets:
            path = notes.export_agents_md(target)
            console.print(escape(f"wrote the notes of {mem.namespace} into {path}"), highlight=False)


@notes_app.command("namespaces")
def notes_namespaces(store: StoreOpt = None) -> None:
    """List the namespaces in the store."""
    with MemoryArgs(store=store).open() as c:
        for name in c.store.namespaces():
            console.print(name, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(notes_app, name="notes")
