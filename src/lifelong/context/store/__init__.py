"""Storage for notes and the documentation index: SQLite by default, PostgreSQL at scale.

``open_store(url)`` picks the backend from the URL:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a bare file path)
- ``postgresql://user@host:port/dbname`` (also ``postgres://``)

With no URL, ``LIFELONG_STORE`` or ``<data dir>/lifelong.db`` is used.
"""

from __future__ import annotations

import os

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
from lifelong.errors import ConfigError

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


def default_store_url() -> str:
    from lifelong.paths import data_dir

    return os.environ.get("LIFELONG_STORE") or f"sqlite:///{data_dir() / 'lifelong.db'}"


def open_store(url: str | None = None) -> Store:
    """Open (creating and migrating as needed) the store named by ``url``."""
    url = url or default_store_url()
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
    from lifelong.context.store.sqlite import SqliteStore

    return SqliteStore(path)
