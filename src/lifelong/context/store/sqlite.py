"""SQLite store: the embedded default. One file, WAL, one transaction per write.

WAL lets readers run while one writer writes; ``synchronous=FULL`` makes a
commit durable once it returns (a killed process or a power cut loses nothing
committed); ``busy_timeout`` makes a second writer wait its turn instead of
failing. Writers take the lock up front (``BEGIN IMMEDIATE``) so a
read-check-write sequence can never interleave with another writer's.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifelong.context.store.base import DocRow, SearchHit, Store, validate_namespace
from lifelong.context.store.sql import SqlTx, compress_versions, migrate
from lifelong.errors import StoreError

# Each entry moves the schema from version i to i + 1. Append, never edit:
# a file written by an older release is upgraded by running the missing steps.
MIGRATIONS: list[list[str]] = [
    [  # 1: namespaces, notes and their history
        "CREATE TABLE namespaces (name TEXT PRIMARY KEY, created REAL NOT NULL)",
        """CREATE TABLE notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            text TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'superseded', 'deleted')),
            created REAL NOT NULL, updated REAL NOT NULL,
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '[]',
            tokens INTEGER NOT NULL DEFAULT 0, superseded_by INTEGER)""",
        "CREATE INDEX notes_by_namespace ON notes (namespace, status, created, id)",
        """CREATE TABLE note_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            note_id INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
            old_text TEXT NOT NULL DEFAULT '', new_text TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '', block_tokens INTEGER NOT NULL DEFAULT 0,
            related_id INTEGER)""",
        "CREATE INDEX note_events_by_note ON note_events (namespace, note_id, at, id)",
        "CREATE INDEX note_events_by_time ON note_events (namespace, at, id)",
    ],
    [  # 2: the documentation index with full-text search
        """CREATE TABLE docs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            path TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]', body TEXT NOT NULL DEFAULT '',
            mtime_ns INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
            UNIQUE (namespace, path))""",
        # rowid of docs_fts == docs.id, so an update touches one FTS row, not a scan.
        """CREATE VIRTUAL TABLE docs_fts USING fts5(
            path, description, tags, body, tokenize = 'porter unicode61')""",
    ],
    [  # 3: earlier versions of documents, so a rewrite never loses what it replaced
        """CREATE TABLE doc_versions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            path TEXT NOT NULL, at REAL NOT NULL, change TEXT NOT NULL, text TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX doc_versions_by_path ON doc_versions (namespace, path, id)",
    ],
    [  # 4: versions kept zlib-compressed; those kept as text before are compressed here
        "ALTER TABLE doc_versions ADD COLUMN data BLOB",
        lambda execute: compress_versions(execute, "?"),
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteTx(SqlTx):
    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def _insert(self, sql: str, *args: object) -> int:
        return int(self._q(sql, *args).lastrowid)

    # -- the FTS5 index beside the docs table --------------------------------
    def doc_upsert(self, d: DocRow) -> None:
        tags = json.dumps(d.tags)
        old = self._q("SELECT id FROM docs WHERE namespace = ? AND path = ?", d.path).fetchone()
        if old:
            doc_id = old[0]
            self.conn.execute(
                "UPDATE docs SET description = ?, tags = ?, body = ?, mtime_ns = ?, size = ?,"
                " sha256 = ?, error = ? WHERE id = ? AND namespace = ?",
                (d.description, tags, d.body, d.mtime_ns, d.size, d.sha256, d.error, doc_id,
                 self.namespace),
            )
            self.conn.execute("DELETE FROM docs_fts WHERE rowid = ?", (doc_id,))
        else:
            doc_id = self._q(
                "INSERT INTO docs (namespace, path, description, tags, body, mtime_ns, size, sha256,"
                " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                d.path, d.description, tags, d.body, d.mtime_ns, d.size, d.sha256, d.error,
            ).lastrowid
        self.conn.execute(
            "INSERT INTO docs_fts (rowid, path, description, tags, body) VALUES (?, ?, ?, ?, ?)",
            (doc_id, d.path, d.description, " ".join(d.tags), d.body),
        )

    def doc_delete(self, path: str) -> None:
        old = self._q("SELECT id FROM docs WHERE namespace = ? AND path = ?", path).fetchone()
        if old:
            self.conn.execute("DELETE FROM docs_fts WHERE rowid = ?", (old[0],))
            self._q("DELETE FROM docs WHERE namespace = ? AND id = ?", old[0])

    def doc_search(self, terms: list[str], limit: int) -> list[SearchHit]:
        if not terms:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self.conn.execute(
            # bm25 is lower-is-better; weights favour path and description over body.
            "SELECT d.path, d.description, bm25(docs_fts, 3.0, 4.0, 2.0, 1.0) AS rank,"
            " snippet(docs_fts, 3, '[', ']', '…', 12)"
            " FROM docs_fts JOIN docs d ON d.id = docs_fts.rowid"
            " WHERE docs_fts MATCH ? AND d.namespace = ? ORDER BY rank, d.path LIMIT ?",
            (query, self.namespace, limit),
        )
        return [SearchHit(r[0], r[1], -float(r[2]), r[3]) for r in rows]


class SqliteStore(Store):
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, migrate_to: int | None = None) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per write.
            self.conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}",
                             hint="check that the path is writable and is a lifelong store") from exc
        self._lock = threading.RLock()  # one connection, shared by threads one at a time
        self._migrate(SCHEMA_VERSION if migrate_to is None else migrate_to)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's own errors (a damaged file, a full disk, a lock held too long) as StoreError."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"SQLite store {self.path} is busy: {exc}",
                                 hint="another process holds the write lock; retry") from exc
            raise StoreError(f"SQLite store {self.path} failed: {exc}",
                             hint="check the disk (space, permissions); nothing was written") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite store {self.path} is damaged: {exc}",
                             hint="restore it from a backup; `sqlite3 FILE .recover` may save what is "
                             "left") from exc

    def _stored_version(self) -> int:
        try:
            row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(row[0]) if row else 0

    def _migrate(self, target: int) -> None:
        with self._lock, self._errors():
            # Read first: an up-to-date store needs no write lock, so opening one
            # never waits behind a writer (WAL lets readers run beside it).
            if self._stored_version() == target:
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                migrate(self.conn.execute, MIGRATIONS, target, str(self.path))
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a damaged file may refuse even this
            self.conn.execute("ROLLBACK")

    def schema_version(self) -> int:
        with self._lock, self._errors():
            return int(self.conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def optimize(self) -> None:
        with self._lock, self._errors():
            self.conn.execute("INSERT INTO docs_fts (docs_fts) VALUES ('optimize')")
            self.conn.execute("PRAGMA optimize")

    def namespaces(self) -> list[str]:
        with self._lock, self._errors():
            return [r[0] for r in self.conn.execute("SELECT name FROM namespaces ORDER BY name")]

    def has_namespace(self, name: str) -> bool:
        with self._lock, self._errors():
            return self.conn.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone() is not None

    def create_namespace(self, name: str) -> None:
        validate_namespace(name)
        with self._lock, self._errors():
            self.conn.execute(
                "INSERT OR IGNORE INTO namespaces (name, created) VALUES (?, ?)", (name, time.time())
            )

    @contextmanager
    def session(self, namespace: str, write: bool = False) -> Iterator[SqliteTx]:
        self.require_namespace(namespace)
        with self._lock:
            with self._errors():
                self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                with self._errors():
                    yield SqliteTx(self.conn, namespace)
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    with self._errors():
                        self.conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise

    def integrity_check(self) -> str:
        with self._lock, self._errors():
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.conn.close()
