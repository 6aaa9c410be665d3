"""A real PostgreSQL server on loopback for the serving tests (as the context tests have)."""

from __future__ import annotations

import pytest

from lifelong.context.store.temp_postgres import TempPostgres


@pytest.fixture(scope="session")
def postgres_server():
    pg = TempPostgres(fsync=True)  # the crash test kills the lifelong server, not PostgreSQL
    pg.start()
    yield pg
    pg.stop()
