"""Fixtures for context-memory tests: the same tests run on real SQLite files
and on a real PostgreSQL server started on loopback for the session.

PostgreSQL is never skipped: without the server binaries the fixture fails
and says to run ``make test``, which installs them.
"""

from __future__ import annotations

import pytest

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.context.store.temp_postgres import TempPostgres

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server():
    # fsync off: these tests kill clients, never the server, so durability of
    # the server's own files is not what they test; it makes databases cheap.
    pg = TempPostgres(fsync=False)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """URL of a fresh, empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def notes(store) -> Notes:
    """Notes of namespace "alice", counted in whitespace words, budget 200."""
    return Notes(store, "alice", 200, word_count, model="test-model", create=True)


@pytest.fixture
def docs(store, tmp_path) -> Docs:
    return Docs(store, "alice", tmp_path / "workspace", word_count, model="test-model", create=True)
