"""The store on both backends: schema versions and migrations, URLs, and
namespace isolation enforced by the store itself."""

from __future__ import annotations

import sqlite3

import pytest

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.context.store import NoteRow
from lifelong.context.store import postgres as pg_backend
from lifelong.context.store import sqlite as sqlite_backend
from lifelong.context.store.postgres import PostgresStore
from lifelong.context.store.sqlite import SqliteStore
from lifelong.errors import ConfigError, NotFoundError, StoreError, ValidationError


def _open_at(url: str, version: int):
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///"):], migrate_to=version)
    return PostgresStore(url, migrate_to=version)


def test_migrations_upgrade_an_older_store_and_keep_its_rows(store_url):
    old = _open_at(store_url, 1)  # a store written by a release that knew only notes
    assert old.schema_version() == 1
    old.create_namespace("alice")
    with old.session("alice", write=True) as tx:
        tx.note_insert(NoteRow(0, "alice", "kept across upgrades", created=1.0, updated=1.0))
    old.close()
    new = open_store(store_url)
    latest = len(sqlite_backend.MIGRATIONS) if store_url.startswith("sqlite") else len(pg_backend.MIGRATIONS)
    assert new.schema_version() == latest == 4
    with new.session("alice") as tx:
        assert [n.text for n in tx.notes()] == ["kept across upgrades"]
        assert tx.doc_search(["anything"], 5) == []  # the docs index now exists
        assert tx.doc_versions("a.md") == []  # and so do document versions
    new.close()
    again = open_store(store_url)  # reopening is a no-op
    assert again.schema_version() == 4
    again.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def test_store_urls(tmp_path, monkeypatch):
    s = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(s, SqliteStore) and (tmp_path / "a.db").exists()
    s.close()
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///rel/b.db")
    assert (tmp_path / "rel/b.db").exists()
    s.close()
    monkeypatch.setenv("LIFELONG_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    open_store().close()
    assert (tmp_path / "env.db").exists()
    for bad in ("mysql://x/y", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            open_store(bad)
    with pytest.raises(StoreError, match=r"cannot connect to postgresql://bob:\*\*\*@127.0.0.1:1/db"):
        open_store("postgresql://bob:secret@127.0.0.1:1/db")


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = SqliteStore(tmp_path / "w.db")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.integrity_check() == "ok"
    s.close()


def test_namespaces(store):
    assert store.namespaces() == []
    store.create_namespace("b")
    store.create_namespace("a")
    store.create_namespace("a")  # idempotent
    assert store.namespaces() == ["a", "b"]
    for bad in ("", "a b", "../x", "x/y", ".", "-x", "x" * 65):
        with pytest.raises(ValidationError):
            store.create_namespace(bad)
    with pytest.raises(NotFoundError, match="unknown namespace 'zzz'"):
        with store.session("zzz"):
            pass


def test_one_namespace_can_neither_read_nor_change_anothers(store, tmp_path):
    alice = Notes(store, "alice", 500, word_count, create=True)
    bob = Notes(store, "bob", 500, word_count, create=True)
    secret = alice.add("alice's deploy key lives in vault path kv/alice").note
    bob.add("bob's note")

    # Reads through bob's API and through bob's transactions never see alice's rows.
    assert [n.text for n in bob.list(None)] == ["bob's note"]
    assert "vault" not in bob.render()
    with store.session("bob") as tx:
        assert tx.note_get(secret.id) is None
        assert all(n.namespace == "bob" for n in tx.notes(None))
        assert all(e.note_id != secret.id for e in tx.events())
    # Every write path through bob refuses alice's id and changes nothing.
    for attempt in (
        lambda: bob.get(secret.id),
        lambda: bob.edit(secret.id, "vault", "nothing"),
        lambda: bob.supersede(secret.id, "hijacked"),
        lambda: bob.delete(secret.id),
        lambda: bob.restore(secret.id),
        lambda: bob.purge(secret.id),
        lambda: bob.history(secret.id),
    ):
        with pytest.raises(NotFoundError, match="namespace 'bob'"):
            attempt()
    with store.session("bob", write=True) as tx:  # even raw statements are scoped
        row = NoteRow(secret.id, "alice", "overwritten", status="deleted", updated=2.0)
        tx.note_update(row)
        tx.note_purge(secret.id)
    got = alice.get(secret.id)
    assert (got.text, got.status) == (secret.text, "active")
    assert [e.kind for e in alice.history(secret.id)] == ["add"]
    # A near-duplicate in another namespace is not a duplicate.
    assert bob.add("alice's deploy key lives in vault path kv/alice").created

    # Docs: separate folders, separate index, no path from one into the other.
    root = tmp_path / "ws"
    adocs = Docs(store, "alice", root, word_count, create=True)
    bdocs = Docs(store, "bob", root, word_count, create=True)
    adocs.write("keys.md", "the platypus key rotation schedule", description="keys")
    assert bdocs.search("platypus") == [] and bdocs.tree() == []
    with pytest.raises(ValidationError, match="'..'"):
        bdocs.read("../alice/keys.md")
    with pytest.raises(NotFoundError):
        bdocs.read("keys.md")
    with store.session("bob", write=True) as tx:
        tx.doc_delete("keys.md")
        assert tx.doc_get("keys.md") is None
    assert [h.path for h in adocs.search("platypus")] == ["keys.md"]
    adocs.append("keys.md", "rotated")
    assert len(adocs.history("keys.md")) == 1
    with store.session("bob") as tx:
        assert tx.doc_versions("keys.md") == []


def test_optimize_keeps_every_row_findable(store, tmp_path):
    docs = Docs(store, "alice", tmp_path / "ws", word_count, create=True)
    for i in range(30):
        docs.write(f"d{i}.md", f"entry {i} about kangaroo{i % 3}", description=f"d{i}")
    store.optimize()
    assert len(docs.search("kangaroo0", limit=50)) == 10
    assert len(docs.tree()) == 30
