"""An MCP server for the notes and docs of one namespace.

Any MCP client (a coding agent, a chat app) gets the same memory a session
has, through few sharp verbs:

- notes: ``notes_view`` (the block as it is put in every prompt),
  ``notes_list``, ``notes_add``, ``notes_edit`` (str_replace style),
  ``notes_supersede``, ``notes_delete`` (soft), ``notes_history``;
- docs: ``docs_tree``, ``docs_search``, ``docs_read`` (a page of at most N
  tokens from an offset, with the offset of the next page), ``docs_write``,
  ``docs_append``, ``docs_str_replace``.

The server is bound to one namespace when it starts: a client has no way to
name another, so it can neither read nor change another tenant's memory. Each
result is readable text for the model plus the same facts as structured
content for programs. A :class:`~lifelong.errors.LifelongError` (empty note,
path leaving the workspace, over budget, …) comes back as a tool error whose
text says what went wrong and what to do; nothing stored changes and the
server keeps running.

>>> server = build_server(notes, docs)   # the Notes and Docs of one namespace
>>> server.run("stdio")
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from lifelong.context.docs import Docs
from lifelong.context.notes import Note, Notes, render_notes
from lifelong.errors import ConfigError, LifelongError
from lifelong.redact import redact

SERVER_NAME = "lifelong"
DEFAULT_PAGE_TOKENS = 1024
log = logging.getLogger(__name__)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

INSTRUCTIONS = """\
Memory of namespace {namespace!r}, kept by lifelong across tasks.

Notes are short facts every future instance sees in its context: write only
what a fresh instance would not know, in as few words as possible. Read them
with notes_view; change them with notes_add, notes_edit, notes_supersede
(merge or correct) and notes_delete. The block has a budget of {budget} tokens.

Documentation is verbose Markdown, one file per topic, read on demand: find it
with docs_tree or docs_search, read it a page at a time with docs_read, and
write it with docs_write, docs_append and docs_str_replace.
"""

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# Every change keeps what it replaced (note history, document versions): not destructive.
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


# -- arguments: their descriptions are what the client's model reads --------------------------


NoteId = Annotated[int, Field(description="Id of the note, as shown in [brackets] by notes_view.")]
NoteIds = Annotated[list[int], Field(description="Ids of the active notes the new note replaces.")]
NoteText = Annotated[str, Field(description="The note: one short fact a fresh instance would not "
                                            "know.")]
Tags = Annotated[list[str] | None, Field(description="Optional tags: 1-40 characters of letters, "
                                                     "digits, _ . : / -")]
NewTags = Annotated[list[str] | None, Field(description="Tags of the new note (default: the old "
                                                        "notes' tags).")]
TagFilter = Annotated[str | None, Field(description="Only notes with this tag.")]
Status = Annotated[Literal["active", "superseded", "deleted", "all"],
                   Field(description="Which notes: active (default), superseded, deleted or all.")]
OldNoteText = Annotated[str, Field(description="Exact text to replace; must occur exactly once in "
                                               "the note.")]
NewText = Annotated[str, Field(description="Replacement text (may be empty, to cut words).")]
Reason = Annotated[str, Field(description="Why (kept in the note's history).")]
HistoryOf = Annotated[int | None, Field(description="A note's id; leave out for every change in "
                                                    "the namespace.")]
DocPath = Annotated[str, Field(description="Document path inside the workspace, e.g. "
                                           "deploy/aws.md ('.md' is added if missing).")]
DocText = Annotated[str, Field(description="Markdown body, or a whole file starting with YAML "
                                           "front matter (description, tags).")]
Description = Annotated[str | None, Field(description="One-line summary shown by docs_tree.")]
AppendText = Annotated[str, Field(description="Markdown to add at the end of the document.")]
OldDocText = Annotated[str, Field(description="Exact text to replace, as docs_read shows it; "
                                              "must occur exactly once in the file.")]
Query = Annotated[str, Field(description="Words to look for (any of them; best matches first).")]
Limit = Annotated[int, Field(description="Most results.", ge=1, le=100)]
Offset = Annotated[int, Field(description="Character offset to start at: 0, or next_offset of "
                                          "the previous page.", ge=0)]
MaxTokens = Annotated[int, Field(description="Most tokens in the page.", ge=1)]


# -- results ---------------------------------------------------------------------------------


def _result(text: str, data: dict[str, Any]) -> CallToolResult:
    """Readable text for the model, the same facts as structured content for programs."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _note_line(n: Note) -> str:
    tags = f" #{' #'.join(n.tags)}" if n.tags else ""
    extra = f", superseded by {n.superseded_by}" if n.superseded_by else ""
    return f"[{n.id}] ({n.status}{extra}, {n.tokens} tokens){tags} {n.text}"


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While loading a model, send whatever is written to file descriptor 1
    (a native library's log line, say) to stderr: on stdio, stdout is the protocol."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# -- the server ------------------------------------------------------------------------------


def build_server(notes: Notes, docs: Docs, *, name: str = SERVER_NAME,
                 log_level: LogLevel = "WARNING") -> MCPServer:
    """An MCP server whose tools act on ``notes`` and ``docs`` of one namespace.

    Token counts (note sizes, the block's budget, page sizes) use the
    tokenizers ``notes`` and ``docs`` were built with: the model's own.
    Logs go to stderr; at INFO they would name every tool call.
    """
    if notes.namespace != docs.namespace:
        raise ConfigError(f"notes of {notes.namespace!r} and docs of {docs.namespace!r}",
                          hint="one server serves one namespace")
    server = MCPServer(name, log_level=log_level,
                       instructions=INSTRUCTIONS.format(namespace=notes.namespace,
                                                        budget=notes.budget_tokens))
    # The SDK runs plain functions in worker threads; one call at a time keeps
    # the store connection and the model's tokenizer single-threaded.
    lock = threading.Lock()

    ToolFn = Callable[..., CallToolResult]

    def tool(annotations: ToolAnnotations) -> Callable[[ToolFn], ToolFn]:
        def register(fn: ToolFn) -> ToolFn:
            @functools.wraps(fn)  # the SDK reads the name and signature through this
            def guarded(*args: Any, **kwargs: Any) -> CallToolResult:
                with lock:
                    try:
                        return fn(*args, **kwargs)
                    except LifelongError as exc:
                        # Anticipated: the client's model reads what went wrong and what to do.
                        hint = f"\nWhat to do: {exc.hint}" if exc.hint else ""
                        raise ToolError(redact(exc.message + hint)) from None
                    except Exception as exc:
                        # A bug, but the client still learns what failed (not an empty
                        # "Error executing tool"), the traceback goes to the server's log,
                        # and the server keeps running.
                        log.exception("tool %s failed", fn.__name__)
                        raise ToolError(redact(f"{fn.__name__} failed: {type(exc).__name__}: {exc}")
                                        + "\nWhat to do: this is a bug in lifelong; please report "
                                        "it with the server's log") from None

            # The docstring, dedented and unwrapped, is the description the client's model reads.
            description = " ".join(inspect.cleandoc(fn.__doc__ or "").split())
            server.add_tool(guarded, description=description, annotations=annotations)
            return fn

        return register

    # -- notes ---------------------------------------------------------------------------

    @tool(_READ)
    def notes_view() -> CallToolResult:
        """Show the notes block exactly as it is put at the top of every prompt,
        with its size and token budget. Each note starts with its [id]."""
        active = notes.list()
        block = render_notes(active)
        tokens = notes.count_tokens(block)
        plural = "" if len(active) == 1 else "s"
        status = f"{len(active)} note{plural}, {tokens} of {notes.budget_tokens} tokens used"
        return _result((block or "(no notes yet)\n") + f"\n({status})",
                       {"namespace": notes.namespace, "block": block, "notes": len(active),
                        "tokens": tokens, "budget_tokens": notes.budget_tokens})

    @tool(_READ)
    def notes_list(status: Status = "active", tag: TagFilter = None) -> CallToolResult:
        """List notes with their id, status, size in tokens and tags (the active
        ones unless asked for others)."""
        items = notes.list(None if status == "all" else status, tag=tag)
        empty = "(no notes)" if status == "all" else f"(no {status} notes)"
        return _result("\n".join(_note_line(n) for n in items) or empty,
                       {"notes": [asdict(n) for n in items]})

    @tool(_WRITE)
    def notes_add(text: NoteText, tags: Tags = None) -> CallToolResult:
        """Add a note. If an active note already says the same (exactly, or
        nearly the same words), nothing is added and that note is returned.
        Refused if the block would exceed its token budget: then edit, merge
        (notes_supersede) or delete notes, or move detail into documentation."""
        r = notes.add(text, tags=tags or ())
        tokens = notes.tokens()
        if r.created:
            msg = (f"added note {r.note.id} ({r.note.tokens} tokens; block {tokens} of "
                   f"{notes.budget_tokens})")
        else:
            msg = (f"not added: {r.duplicate} duplicate of note {r.note.id} "
                   f"(similarity {r.similarity:.2f}): {r.note.text}")
        return _result(msg, {"created": r.created, "duplicate": r.duplicate,
                             "similarity": r.similarity, "note": asdict(r.note),
                             "block_tokens": tokens, "budget_tokens": notes.budget_tokens})

    @tool(_WRITE)
    def notes_edit(note_id: NoteId, old_text: OldNoteText, new_text: NewText) -> CallToolResult:
        """Edit an active note, str_replace style: old_text, which must occur
        exactly once in the note, becomes new_text. The earlier text stays in
        the note's history."""
        note = notes.edit(note_id, old_text, new_text)
        return _result(f"note {note.id} is now: {note.text}", {"note": asdict(note)})

    @tool(_WRITE)
    def notes_supersede(note_ids: NoteIds, text: NoteText, tags: NewTags = None) -> CallToolResult:
        """Replace one or more notes by a new one: merge duplicates, correct a
        wrong note, or compress several into one. The old notes leave the block
        but stay in history, linked to the new note."""
        note = notes.supersede(note_ids, text, tags=tags)
        olds = ", ".join(map(str, note_ids))
        return _result(f"note {note.id} supersedes {olds}: {note.text}",
                       {"note": asdict(note), "superseded": list(note_ids)})

    @tool(_WRITE)
    def notes_delete(note_id: NoteId, reason: Reason = "") -> CallToolResult:
        """Delete a note that is wrong or no longer useful. It leaves the block;
        the note and its history are kept, and a person can restore it."""
        note = notes.delete(note_id, reason=reason)
        return _result(f"deleted note {note.id}: {note.text}", {"note": asdict(note)})

    @tool(_READ)
    def notes_history(note_id: HistoryOf = None) -> CallToolResult:
        """Every recorded change of a note, oldest first: add, edit (old → new),
        supersede, delete, duplicate attempts; of all notes if no id is given."""
        events = notes.history(note_id)
        lines = []
        for e in events:
            change = e.new_text or e.old_text
            if e.kind == "edit":
                change = f"{e.old_text} → {e.new_text}"
            related = f" (note {e.related_id})" if e.related_id else ""
            lines.append(f"note {e.note_id} {e.kind}{related}: {change}")
        return _result("\n".join(lines) or "(no history)", {"history": [asdict(e) for e in events]})

    # -- docs ----------------------------------------------------------------------------

    @tool(_READ)
    def docs_tree() -> CallToolResult:
        """List every document with its one-line description and size."""
        items = docs.tree()
        lines = [f"{d.path} ({d.size} bytes): {d.description}"
                 + (f" [front matter error: {d.error}]" if d.error else "") for d in items]
        return _result("\n".join(lines) or "(no documents yet)",
                       {"documents": [asdict(d) for d in items]})

    @tool(_READ)
    def docs_search(query: Query, limit: Limit = 10) -> CallToolResult:
        """Full-text search over the documents: path, description and a snippet
        of each match, best first. Read a match with docs_read."""
        hits = docs.search(query, limit)
        found = "\n\n".join(f"{h.path}: {h.description}\n  {h.snippet}" for h in hits)
        return _result(found or "(no matches)", {"hits": [asdict(h) for h in hits]})

    @tool(_READ)
    def docs_read(path: DocPath, offset: Offset = 0,
                  max_tokens: MaxTokens = DEFAULT_PAGE_TOKENS) -> CallToolResult:
        """Read a page of a document, front matter included: at most max_tokens
        tokens from a character offset, ending at a line break when one is
        near. The last line says where the next page starts; call again with
        that offset to read on."""
        page = docs.read(path, offset, max_tokens)
        more = f"more: docs_read offset={page.next_offset}" if page.more else "end of document"
        footer = (f"[{page.path} characters {page.offset}-{page.next_offset} of "
                  f"{page.total_chars}, {page.tokens} tokens; {more}]")
        sep = "" if not page.text or page.text.endswith("\n") else "\n"
        return _result(page.text + sep + footer, asdict(page))

    @tool(_WRITE)
    def docs_write(path: DocPath, text: DocText, description: Description = None,
                   tags: Tags = None) -> CallToolResult:
        """Create a document, or overwrite one (its earlier content is kept as a
        version). Verbose detail belongs here; the notes only point to it."""
        info = docs.write(path, text, description=description, tags=tags)
        return _result(f"wrote {info.path} ({info.size} bytes)", asdict(info))

    @tool(_WRITE)
    def docs_append(path: DocPath, text: AppendText) -> CallToolResult:
        """Add text at the end of an existing document."""
        info = docs.append(path, text)
        return _result(f"appended to {info.path} ({info.size} bytes)", asdict(info))

    @tool(_WRITE)
    def docs_str_replace(path: DocPath, old_text: OldDocText, new_text: NewText) -> CallToolResult:
        """Edit a document: old_text, which must occur exactly once in the file
        (front matter included), becomes new_text. The earlier content is kept
        as a version."""
        info = docs.str_replace(path, old_text, new_text)
        return _result(f"edited {info.path} ({info.size} bytes)", asdict(info))

    return server


def serve_stdio(notes: Notes, docs: Docs, *, name: str = SERVER_NAME,
                log_level: LogLevel = "WARNING") -> None:
    """Serve ``notes`` and ``docs`` over stdio until the client closes the connection."""
    build_server(notes, docs, name=name, log_level=log_level).run("stdio")


__all__ = ["DEFAULT_PAGE_TOKENS", "SERVER_NAME", "build_server", "serve_stdio", "stdout_to_stderr"]
