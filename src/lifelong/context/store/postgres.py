"""PostgreSQL store (psycopg 3): the same interface, for deployments that
outgrow one machine. Full-text search is PostgreSQL's own (``tsvector``).

Writers of one namespace are serialised by a row lock on that namespace
(``SELECT … FOR UPDATE``): the same guarantee ``BEGIN IMMEDIATE`` gives on
SQLite, without blocking writers of other namespaces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lifelong.context.store.base import DocRow, SearchHit, Store, validate_namespace
from lifelong.context.store.sql import SqlTx, compress_versions, migrate
from lifelong.errors import ConfigError, StoreError
from lifelong.redact import redact

MIGRATIONS: list[list[str]] = [
    [  # 1: namespaces, notes and their history
        "CREATE TABLE namespaces (name TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL)",
        """CREATE TABLE notes (
            id BIGSERIAL PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            text TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'superseded', 'deleted')),
            created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '[]',
            tokens INTEGER NOT NULL DEFAULT 0, superseded_by BIGINT)""",
        "CREATE INDEX notes_by_namespace ON notes (namespace, status, created, id)",
        """CREATE TABLE note_events (
            id BIGSERIAL PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            note_id BIGINT NOT NULL, kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            old_text TEXT NOT NULL DEFAULT '', new_text TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '', block_tokens INTEGER NOT NULL DEFAULT 0,
            related_id BIGINT)""",
        "CREATE INDEX note_events_by_note ON note_events (namespace, note_id, at, id)",
        "CREATE INDEX note_events_by_time ON note_events (namespace, at, id)",
    ],
    [  # 2: the documentation index with full-text search
        """CREATE TABLE docs (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            path TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]', body TEXT NOT NULL DEFAULT '',
            mtime_ns BIGINT NOT NULL DEFAULT 0, size BIGINT NOT NULL DEFAULT 0,
            sha256 TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', translate(path, '/._-', '    ')), 'A') ||
                setweight(to_tsvector('english', description), 'A') ||
                setweight(to_tsvector('english', tags), 'B') ||
                setweight(to_tsvector('english', body), 'C')) STORED,
            PRIMARY KEY (namespace, path))""",
        "CREATE INDEX docs_tsv ON docs USING GIN (tsv)",
    ],
    [  # 3: earlier versions of documents, so a rewrite never loses what it replaced
        """CREATE TABLE doc_versions (
            id BIGSERIAL PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            path TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, change TEXT NOT NULL, text TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '', session TEXT NOT NULL DEFAULT '',
            task TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX doc_versions_by_path ON doc_versions (namespace, path, id)",
    ],
    [  # 4: versions kept zlib-compressed; those kept as text before are compressed here
        "ALTER TABLE doc_versions ADD COLUMN data BYTEA",
        lambda execute: compress_versions(execute, "%s"),
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
_MIGRATION_LOCK = 0x6C6966656C6F6E  # any constant: serialises concurrent first opens


class PostgresTx(SqlTx):
    def _execute(self, sql: str, params: tuple = ()):
        return self.conn.execute(sql.replace("?", "%s"), params)

    def _insert(self, sql: str, *args: object) -> int:
        return int(self._q(sql + " RETURNING id", *args).fetchone()[0])

    # -- the tsvector index of the docs table ----------------------------------
    def doc_upsert(self, d: DocRow) -> None:
        self._q(
            "INSERT INTO docs (namespace, path, description, tags, body, mtime_ns, size, sha256, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (namespace, path) DO UPDATE SET description = EXCLUDED.description,"
            " tags = EXCLUDED.tags, body = EXCLUDED.body, mtime_ns = EXCLUDED.mtime_ns,"
            " size = EXCLUDED.size, sha256 = EXCLUDED.sha256, error = EXCLUDED.error",
            d.path, d.description, json.dumps(d.tags), d.body, d.mtime_ns, d.size, d.sha256, d.error,
        )

    def doc_delete(self, path: str) -> None:
        self._q("DELETE FROM docs WHERE namespace = ? AND path = ?", path)

    def doc_search(self, terms: list[str], limit: int) -> list[SearchHit]:
        if not terms:
            return []
        # Terms are plain words (letters, digits, _); quoting makes each a lexeme.
        query = " | ".join(f"'{t}'" for t in terms)
        cur = self._execute(
            "SELECT path, description, ts_rank(tsv, q) AS score,"
            " ts_headline('english', body, q, 'StartSel=[, StopSel=], MaxWords=20, MinWords=6')"
            " FROM docs, to_tsquery('english', ?) q"
            " WHERE namespace = ? AND tsv @@ q ORDER BY score DESC, path LIMIT ?",
            (query, self.namespace, limit),
        )
        return [SearchHit(r[0], r[1], float(r[2]), r[3]) for r in cur.fetchall()]


class PostgresStore(Store):
    """``postgresql://user:password@host:port/dbname`` (any libpq URL)."""

    def __init__(self, url: str, *, migrate_to: int | None = None) -> None:
        try:
            import psycopg
        except ImportError as exc:  # an optional extra
            raise ConfigError("PostgreSQL store needs psycopg 3",
                              hint="pip install 'lifelong[postgres]'") from exc
        self.url = url
        self.redacted_url()  # remembers the password, so no message shows it
        authority = url.split("://", 1)[-1].split("?", 1)[0]
        if authority.count("@") > 1 or "/" in authority.rpartition("@")[0]:
            # libpq would cut the URL elsewhere and quote a piece of the password as a host.
            raise ConfigError(f"the store URL {self.redacted_url()} has '@' or '/' in its user or password",
                              hint="percent-encode them in the URL: '@' as %40, '/' as %2F")
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except (psycopg.Error, ValueError) as exc:  # ValueError: a URL libpq cannot parse
            raise StoreError(f"cannot connect to {self.redacted_url()}: {redact(str(exc))}".strip(),
                             hint="check the URL and that the server is running") from exc
        self._lock = threading.RLock()
        self._migrate(SCHEMA_VERSION if migrate_to is None else migrate_to)

    def _migrate(self, target: int) -> None:
        with self._lock:
            # Read first: an up-to-date store is opened without taking any lock.
            found = self.conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
            if found and self.schema_version() == target:
                return
        with self._lock, self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            migrate(self.conn.execute, MIGRATIONS, target, self.redacted_url())

    def schema_version(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def optimize(self) -> None:
        with self._lock:
            self.conn.execute("ANALYZE namespaces, notes, note_events, docs")

    def namespaces(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.conn.execute("SELECT name FROM namespaces ORDER BY name").fetchall()]

    def has_namespace(self, name: str) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM namespaces WHERE name = %s", (name,)).fetchone() is not None

    def create_namespace(self, name: str) -> None:
        validate_namespace(name)
        with self._lock:
            self.conn.execute(
                "INSERT INTO namespaces (name, created) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, time.time()),
            )

    @contextmanager
    def session(self, namespace: str, write: bool = False) -> Iterator[PostgresTx]:
        self.require_namespace(namespace)
        with self._lock:
            try:
                with self.conn.transaction():
                    if write:
                        self.conn.execute("SELECT 1 FROM namespaces WHERE name = %s FOR UPDATE", (namespace,))
                    yield PostgresTx(self.conn, namespace)
            except self._psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL store {self.redacted_url()} failed: {redact(str(exc))}",
                                 hint="check that the server is reachable; nothing was written") from exc

    def close(self) -> None:
        with self._lock:
            self.conn.close()
