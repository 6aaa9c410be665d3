"""Storage for notes and the documentation index: SQLite by default, PostgreSQL at scale.

``open_store(url)`` picks the backend from the URL:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a bare file path)
- ``postgresql://user@host:port/dbname`` (also ``postgres://``)

With no URL, ``LIFELONG_STORE`` or ``<data dir>/lifelong.db`` is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from lifelong.context.store.base import (
    DocRow,
    DocVersion,
    NoteEvent,
    NoteRow,
    SearchHit,
    Store,
    Tx,
    validate_namespace,
)
from lifelong.errors import ConfigError, NotFoundError

__all__ = [
    "DocRow",
    "DocVersion",
    "NoteEvent",
    "NoteRow",
    "SearchHit",
    "Store",
    "Tx",
    "default_store_url",
    "open_store",
    "validate_namespace",
]


def default_store_url(*, create: bool = True) -> str:
    from lifelong.paths import data_dir

    return os.environ.get("LIFELONG_STORE") or f"sqlite:///{data_dir(create=create) / 'lifelong.db'}"


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open (migrating as needed) the store named by ``url``. ``create=False``: a
    SQLite file that does not exist is a :class:`NotFoundError`, not a new store
    (what commands that only read want: a typo in a path creates nothing)."""
    url = url or default_store_url(create=create)
    if url.startswith(("postgresql://", "postgres://")):
        from lifelong.context.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif "://" not in url:
        path = url
    else:
        raise ConfigError(
            f"unsupported store URL {url.split('://')[0]}://…",
            hint="use sqlite:///path/to/file.db or postgresql://user@host:port/db",
        )
    if not path or path == ":memory:":
        raise ConfigError("the SQLite store needs a file path",
                          hint="use sqlite:///path/to/file.db (processes share the file)")
    if not create and not Path(path).is_file():
        raise NotFoundError(f"no store at {path}",
                            hint="check --store (or $LIFELONG_STORE); a store is made by the first "
                            "write, e.g. lifelong notes add TEXT -n NAMESPACE")
    from lifelong.context.store.sqlite import SqliteStore

    return SqliteStore(path)
