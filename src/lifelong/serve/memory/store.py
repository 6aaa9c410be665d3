"""Where served sessions' states last: one table in SQLite (default) or PostgreSQL.

``lifelong_serve_sessions(tenant, id, version, tokens, fingerprint, state, created, updated)``:
the state is the bytes of ``states.encode`` (safetensors). Every write names the
version it read; it commits only if that version is still current (optimistic
concurrency), so two servers sharing one PostgreSQL store never overwrite each
other's writes: the later one gets a ``Conflict`` and reloads. A write is
committed (SQLite: WAL, ``synchronous = FULL``) before the server answers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import ConfigError, LifelongError, StoreError
from lifelong.redact import redact, redact_url

TABLE = "lifelong_serve_sessions"


class Conflict(LifelongError):
    """The session's version changed (or it was deleted / created) since it was read."""


@dataclass
class SessionRow:
    tenant: str
    id: str
    version: int
    tokens: int
    updated: float
    state: bytes | None = None


@dataclass
class Write:
    tenant: str
    id: str
    state: bytes
    tokens: int
    expect: int  # the version read; 0 = create (the session must not exist)


class SessionStore:
    """Session states in SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://…``)."""

    def __init__(self, url: str, fingerprint: str) -> None:
        self.url = url
        self.fingerprint = fingerprint
        self._lock = threading.RLock()
        # reads go through a second connection with its own lock: they see committed rows
        # and need not wait while a commit (and its fsync) is under way on the first
        self._rlock = threading.Lock()
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as exc:
                raise ConfigError("a PostgreSQL store needs psycopg 3",
                                  hint="pip install 'lifelong[postgres]'") from exc
            self._pg = True
            self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
            self._integrity: type[BaseException] = psycopg.errors.UniqueViolation
            try:
                self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
                self.rconn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            except (psycopg.Error, ValueError) as exc:
                raise StoreError(f"cannot connect to {redact_url(url)}: {redact(str(exc))}".strip(),
                                 hint="check the URL and that the server is running") from exc
            self.mark, blob = "%s", "BYTEA"
        else:
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            if "://" in path or not path or path == ":memory:":
                raise ConfigError(f"unsupported store URL {redact_url(url)}",
                                  hint="use sqlite:///path/to/file.db or postgresql://user@host:port/db")
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._pg = False
            self._errors = (sqlite3.Error,)
            self._integrity = sqlite3.IntegrityError
            try:
                self.conn = sqlite3.connect(str(Path(path).expanduser()), timeout=30, isolation_level=None,
                                            check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = FULL")
                self.rconn = sqlite3.connect(str(Path(path).expanduser()), timeout=30, isolation_level=None,
                                             check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the SQLite store {path}: {exc}",
                                 hint="check the path and its permissions") from exc
            self.mark, blob = "?", "BLOB"
        self._exec(f"CREATE TABLE IF NOT EXISTS {TABLE} (tenant TEXT NOT NULL, id TEXT NOT NULL, "
                   f"version BIGINT NOT NULL, tokens BIGINT NOT NULL, fingerprint TEXT NOT NULL, "
                   f"state {blob} NOT NULL, created DOUBLE PRECISION NOT NULL, "
                   f"updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, id))")

    # --- plumbing ---------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.mark)

    def _exec(self, sql: str, params: tuple = ()):
        with self._lock:
            try:
                return self.conn.execute(self._sql(sql), params)
            except self._errors as exc:
                raise StoreError(f"the session store failed: {redact(str(exc))}",
                                 hint="check that the store is reachable; nothing was written") from exc

    def _read(self, sql: str, params: tuple = ()) -> list:
        with self._rlock:
            try:
                return self.rconn.execute(self._sql(sql), params).fetchall()
            except self._errors as exc:
                raise StoreError(f"the session store failed: {redact(str(exc))}",
                                 hint="check that the store is reachable") from exc

    def close(self) -> None:
        with self._lock, self._rlock:
            self.conn.close()
            self.rconn.close()

    # --- reads ------------------------------------------------------------------------

    def get(self, tenant: str, sid: str, *, with_state: bool = True) -> SessionRow | None:
        cols = "version, tokens, updated" + (", state" if with_state else "")
        rows = self._read(f"SELECT {cols} FROM {TABLE} WHERE tenant = ? AND id = ?", (tenant, sid))
        if not rows:
            return None
        r = rows[0]
        return SessionRow(tenant, sid, int(r[0]), int(r[1]), float(r[2]),
                          bytes(r[3]) if with_state else None)

    def versions(self, tenant: str, ids: Iterable[str]) -> dict[str, int]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._read(f"SELECT id, version FROM {TABLE} WHERE tenant = ? AND id IN ({marks})",
                          (tenant, *ids))
        return {str(r[0]): int(r[1]) for r in rows}

    def list(self, tenant: str) -> list[SessionRow]:
        rows = self._read(f"SELECT id, version, tokens, updated FROM {TABLE} WHERE tenant = ? ORDER BY id",
                          (tenant,))
        return [SessionRow(tenant, str(r[0]), int(r[1]), int(r[2]), float(r[3])) for r in rows]

    # --- writes -----------------------------------------------------------------------

    def write_many(self, writes: list[Write]) -> list[int | Conflict]:
        """Commit every write whose expected version is current, in one transaction; for
        each, the new version or the ``Conflict`` that refused it."""
        out: list[int | Conflict] = []
        now = time.time()
        with self._lock:
            try:
                with self.conn.transaction() if self._pg else _sqlite_tx(self.conn):
                    for w in writes:
                        out.append(self._write_one(w, now))
            except self._errors as exc:
                raise StoreError(f"the session store failed: {redact(str(exc))}",
                                 hint="check that the store is reachable; nothing was written") from exc
        return out

    def _write_one(self, w: Write, now: float) -> int | Conflict:
        x = self.conn.execute
        if w.expect == 0:
            exists = x(self._sql(f"SELECT 1 FROM {TABLE} WHERE tenant = ? AND id = ?"), (w.tenant, w.id)).fetchone()
            if exists:
                return Conflict(f"session {w.id!r} already exists", hint="pick another id or delete it first")
            x(self._sql(f"INSERT INTO {TABLE} (tenant, id, version, tokens, fingerprint, state, created, updated) "
                        "VALUES (?, ?, 1, ?, ?, ?, ?, ?)"),
              (w.tenant, w.id, w.tokens, self.fingerprint, w.state, now, now))
            return 1
        cur = x(self._sql(f"UPDATE {TABLE} SET version = version + 1, tokens = ?, state = ?, updated = ? "
                          "WHERE tenant = ? AND id = ? AND version = ?"),
                (w.tokens, w.state, now, w.tenant, w.id, w.expect))
        if cur.rowcount == 1:
            return w.expect + 1
        row = x(self._sql(f"SELECT version FROM {TABLE} WHERE tenant = ? AND id = ?"), (w.tenant, w.id)).fetchone()
        if row is None:
            return Conflict(f"session {w.id!r} was deleted", hint="create it again")
        return Conflict(f"session {w.id!r} changed (version {int(row[0])}, this write read {w.expect})",
                        hint="another server wrote it; send the request again")

    def put(self, tenant: str, sid: str, state: bytes, tokens: int) -> int:
        """Create or replace a session's state whatever its version (a restore); the new version."""
        with self._lock:
            row = self.get(tenant, sid, with_state=False)
            res = self.write_many([Write(tenant, sid, state, tokens, row.version if row else 0)])[0]
        if isinstance(res, Conflict):
            raise res
        return res

    def delete(self, tenant: str, sid: str) -> bool:
        cur = self._exec(f"DELETE FROM {TABLE} WHERE tenant = ? AND id = ?", (tenant, sid))
        return cur.rowcount == 1


@contextmanager
def _sqlite_tx(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
