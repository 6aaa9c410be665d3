"""The queries both SQL backends share, written once.

Queries use ``?`` placeholders; a backend's ``_execute`` adapts them to its
driver. The namespace is always the first parameter of ``_q``, so no query
here runs unscoped. Backends add what differs: how an insert reports its id,
and the full-text index of the documentation.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from lifelong.context.store.base import DocRow, DocVersion, NoteEvent, NoteRow, Tx
from lifelong.errors import StoreError

NOTE_COLS = "id, namespace, text, status, created, updated, model, session, task, tags, tokens, superseded_by"
EVENT_COLS = "id, note_id, kind, at, old_text, new_text, model, session, task, block_tokens, related_id"


def tags_of(raw: str) -> list[str]:
    return [] if raw == "[]" else json.loads(raw)


def note_of(r: tuple) -> NoteRow:
    return NoteRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], tags_of(r[9]), r[10], r[11])


def event_of(r: tuple) -> NoteEvent:
    return NoteEvent(
        note_id=r[1], kind=r[2], at=r[3], old_text=r[4], new_text=r[5], model=r[6],
        session=r[7], task=r[8], block_tokens=r[9], related_id=r[10], id=r[0],
    )


# Earlier versions of documents are stored zlib-compressed: a document rewritten
# many times is mostly the same prose again, and prose compresses 3-4x.
VERSION_COMPRESSION = 6
Migration = Sequence["str | Callable[[Callable[..., Any]], None]"]


def pack_version(data: bytes) -> bytes:
    return zlib.compress(data, VERSION_COMPRESSION)


def unpack_version(text: str, data: bytes | None) -> bytes:
    """A stored version's bytes: compressed ``data`` (schema 4 on), else the ``text``
    column that versions were kept in before."""
    return zlib.decompress(data) if data is not None else text.encode("utf-8")


def compress_versions(execute: Callable[..., Any], mark: str = "?", batch: int = 64) -> None:
    """Migration step: move versions kept as text into the compressed column,
    a batch at a time (a store may hold gigabytes of them)."""
    last = 0
    while True:
        rows = execute(f"SELECT id, text FROM doc_versions WHERE id > {mark} AND data IS NULL"
                       f" ORDER BY id LIMIT {batch:d}", (last,)).fetchall()
        if not rows:
            return
        for row_id, text in rows:
            execute(f"UPDATE doc_versions SET data = {mark}, text = '' WHERE id = {mark}",
                    (pack_version(text.encode("utf-8")), row_id))
        last = rows[-1][0]


def migrate(execute: Callable[..., Any], migrations: Sequence[Migration], target: int,
            where: str) -> None:
    """Bring the schema to version ``target``, inside the caller's transaction.

    Version ``n`` is the state after ``migrations[:n]``; a step is SQL, or a
    function of ``execute`` for what SQL alone cannot do (compressing rows). A
    store newer than this code is refused rather than touched."""
    execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        execute("INSERT INTO schema_version VALUES (0)")
    current = row[0] if row else 0
    if current > len(migrations):
        raise StoreError(f"{where} has schema version {current}; this lifelong knows up to {len(migrations)}",
                         hint="upgrade lifelong to open this store")
    for version in range(current, target):
        for stmt in migrations[version]:
            if callable(stmt):
                stmt(execute)
            else:
                execute(stmt)
        execute(f"UPDATE schema_version SET version = {version + 1:d}")


class SqlTx(Tx):
    """One transaction on one namespace, for a DB-API connection."""

    def __init__(self, conn: Any, namespace: str) -> None:
        self.conn = conn
        self.namespace = namespace

    # -- what a backend provides ---------------------------------------------
    def _execute(self, sql: str, params: tuple = ()) -> Any:
        raise NotImplementedError

    def _insert(self, sql: str, *args: object) -> int:
        """Run an INSERT scoped by namespace and return the new row's id."""
        raise NotImplementedError

    def _q(self, sql: str, *args: object) -> Any:
        return self._execute(sql, (self.namespace, *args))

    # -- notes ---------------------------------------------------------------
    def note_get(self, note_id: int) -> NoteRow | None:
        r = self._q(f"SELECT {NOTE_COLS} FROM notes WHERE namespace = ? AND id = ?", note_id).fetchone()
        return note_of(r) if r else None

    def notes(self, status: str | None = "active") -> list[NoteRow]:
        if status is None:
            cur = self._q(f"SELECT {NOTE_COLS} FROM notes WHERE namespace = ? ORDER BY created, id")
        else:
            cur = self._q(
                f"SELECT {NOTE_COLS} FROM notes WHERE namespace = ? AND status = ? ORDER BY created, id",
                status,
            )
        return [note_of(r) for r in cur.fetchall()]

    def active_texts(self) -> list[tuple[int, str]]:
        return [tuple(r) for r in self._q(
            "SELECT id, text FROM notes WHERE namespace = ? AND status = 'active' ORDER BY created, id"
        ).fetchall()]

    def note_insert(self, row: NoteRow) -> int:
        return self._insert(
            "INSERT INTO notes (namespace, text, status, created, updated, model, session, task,"
            " tags, tokens, superseded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row.text, row.status, row.created, row.updated, row.model, row.session, row.task,
            json.dumps(row.tags), row.tokens, row.superseded_by,
        )

    def note_update(self, row: NoteRow) -> None:
        self._execute(
            "UPDATE notes SET text = ?, status = ?, updated = ?, tags = ?, tokens = ?,"
            " superseded_by = ? WHERE namespace = ? AND id = ?",
            (row.text, row.status, row.updated, json.dumps(row.tags), row.tokens,
             row.superseded_by, self.namespace, row.id),
        )

    def note_purge(self, note_id: int) -> None:
        self._q("DELETE FROM note_events WHERE namespace = ? AND note_id = ?", note_id)
        self._q("DELETE FROM notes WHERE namespace = ? AND id = ?", note_id)

    def event_insert(self, e: NoteEvent) -> int:
        return self._insert(
            "INSERT INTO note_events (namespace, note_id, kind, at, old_text, new_text, model,"
            " session, task, block_tokens, related_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            e.note_id, e.kind, e.at, e.old_text, e.new_text, e.model, e.session, e.task,
            e.block_tokens, e.related_id,
        )

    def events(self, note_id: int | None = None) -> list[NoteEvent]:
        if note_id is None:
            cur = self._q(f"SELECT {EVENT_COLS} FROM note_events WHERE namespace = ? ORDER BY at, id")
        else:
            cur = self._q(
                f"SELECT {EVENT_COLS} FROM note_events WHERE namespace = ? AND note_id = ?"
                " ORDER BY at, id",
                note_id,
            )
        return [event_of(r) for r in cur.fetchall()]

    # -- documentation index -------------------------------------------------
    def doc_get(self, path: str) -> DocRow | None:
        r = self._q(
            "SELECT path, description, tags, body, mtime_ns, size, sha256, error FROM docs"
            " WHERE namespace = ? AND path = ?",
            path,
        ).fetchone()
        return DocRow(r[0], r[1], tags_of(r[2]), r[3], r[4], r[5], r[6], r[7]) if r else None

    def doc_list(self) -> list[DocRow]:
        rows = self._q(
            "SELECT path, description, tags, mtime_ns, size, sha256, error FROM docs"
            " WHERE namespace = ? ORDER BY path"
        ).fetchall()
        return [DocRow(r[0], r[1], tags_of(r[2]), "", r[3], r[4], r[5], r[6]) for r in rows]

    def doc_stamps(self) -> dict[str, tuple[int, int, str]]:
        rows = self._q("SELECT path, mtime_ns, size, sha256 FROM docs WHERE namespace = ?").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def doc_version_insert(self, v: DocVersion) -> int:
        return self._insert(
            "INSERT INTO doc_versions (namespace, path, at, change, text, data, model, session, task)"
            " VALUES (?, ?, ?, ?, '', ?, ?, ?, ?)",
            v.path, v.at, v.change, pack_version(v.data), v.model, v.session, v.task,
        )

    def doc_versions(self, path: str) -> list[DocVersion]:
        rows = self._q(
            "SELECT id, path, at, change, text, data, model, session, task FROM doc_versions"
            " WHERE namespace = ? AND path = ? ORDER BY id",
            path,
        ).fetchall()
        out = []
        for r in rows:
            data = unpack_version(r[4], None if r[5] is None else bytes(r[5]))
            out.append(DocVersion(r[0], r[1], r[2], r[3], data.decode("utf-8", errors="replace"),
                                  r[6], r[7], r[8], data=data))
        return out
