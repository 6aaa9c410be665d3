"""Bad input meets the store and the docs: each gets a clear LifelongError,
nothing stored is lost, and both backends agree. One test per defect found
by trying the library as a hostile or careless user would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import unicodedata
import zlib

import pytest

from lifelong.atomic import atomic_write_text
from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.context.store.base import DocVersion
from lifelong.context.store.sqlite import SqliteStore
from lifelong.errors import LifelongError, NotFoundError, StoreError, ValidationError


def test_a_file_name_that_is_not_utf8_does_not_break_the_namespace(docs):
    docs.write("good.md", "fine", description="good")
    bad = os.fsencode(docs.folder) + b"/x\xff.md"
    with open(bad, "wb") as fh:
        fh.write(b"written by another program")
    # tree, search and the index a session reads keep working; the file is named as skipped
    assert [d.path for d in docs.tree()] == ["good.md"]
    assert docs.unindexed == ["'x\\udcff.md'"]
    assert [h.path for h in docs.search("fine")] == ["good.md"]
    assert docs.tree_text() == "- good.md: good"
    # and the API can never create such a name itself
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        docs.write("y\udcff.md", "body")
    assert os.path.exists(bad)  # nothing a person put there is touched


def test_paths_that_name_no_document_are_refused_clearly(docs):
    docs.write("plain.md", "a plain document")
    (docs.folder / "adir.md").mkdir()
    cases = {
        ".": "names a folder",
        "./": "names a folder",
        "plain.md/x.md": "no document|is a document, not a folder",
        "plain.md/x": "no document|is a document, not a folder",
        "adir.md": "is a folder",
        "a" * 300: "longer than 255 bytes",
        "/".join(["a"] * 1500) + ".md": "levels deep",
        "x\nY.md": "control or invisible",
        "x\u202eY.md": "control or invisible",
        "x\x85.md": "control or invisible",
    }
    for path, why in cases.items():
        for op in ("read", "write", "append", "str_replace", "history"):
            with pytest.raises(LifelongError, match=why):
                if op == "read":
                    docs.read(path)
                elif op == "write":
                    docs.write(path, "body")
                elif op == "append":
                    docs.append(path, "more")
                elif op == "str_replace":
                    docs.str_replace(path, "a", "b")
                elif path not in ("plain.md/x.md", "plain.md/x", "adir.md"):  # history: path only
                    docs.history(path)
                else:
                    raise ValidationError("no document / is a folder")
    assert (docs.folder / "plain.md").is_file() and (docs.folder / "adir.md").is_dir()
    assert [d.path for d in docs.tree()] == ["plain.md"]


def test_a_document_that_is_not_utf8_is_never_rewritten(docs):
    latin1 = "---\ndescription: Café\n---\n\nCrème brûlée, 5 €uro\n".replace("€", "E").encode("latin-1")
    path = docs.folder / "menu.md"
    path.write_bytes(latin1)
    for change in (lambda: docs.append("menu.md", "more"),
                   lambda: docs.str_replace("menu.md", "Cr", "cr")):
        with pytest.raises(ValidationError, match="not UTF-8 text"):
            change()
    assert path.read_bytes() == latin1
    assert "Cr\ufffdme" in docs.read("menu.md").text  # readable, marked where bytes are not text
    # overwriting is allowed, and the exact bytes it replaced are kept ...
    docs.write("menu.md", "Now in UTF-8: crème brûlée")
    (version,) = docs.history("menu.md")
    assert version.data == latin1 and not version.is_text()
    # ... and come back byte for byte
    docs.restore("menu.md", version.id)
    assert path.read_bytes() == latin1


def test_write_over_a_document_describes_the_new_body(docs):
    docs.write("ops.md", "# Old runbook\n\nold steps")
    docs.write("ops.md", "# New runbook\n\nnew steps")
    assert docs.tree()[0].description == "New runbook"
    docs.write("ops.md", "body", description="explicit")
    assert docs.tree()[0].description == "explicit"


def test_a_description_with_newlines_stays_on_its_line_in_the_index(docs):
    docs.write("a.md", "---\ndescription: \"one\\n- injected.md: fake\"\n---\nbody")
    assert docs.tree_text() == "- a.md: one - injected.md: fake"


def test_nfc_and_nfd_spellings_are_one_document(docs):
    nfc, nfd = unicodedata.normalize("NFC", "café.md"), unicodedata.normalize("NFD", "café.md")
    assert nfc != nfd
    docs.write(nfc, "first")
    docs.append(nfd, "second")
    assert [d.path for d in docs.tree()] == [nfc]
    assert sorted(os.listdir(docs.folder)) == [".lock", nfc]
    # a name a person saved in NFD is found under either spelling, never doubled
    (docs.folder / unicodedata.normalize("NFD", "résumé.md")).write_text("hand made")
    docs.append(unicodedata.normalize("NFC", "résumé.md"), "and more")
    assert [d.path for d in docs.tree()] == [nfc, unicodedata.normalize("NFC", "résumé.md")]
    assert len(os.listdir(docs.folder)) == 3


def test_note_ids_beyond_64_bits_are_not_found_on_both_backends(notes):
    notes.add("a note")
    for nid in (2**63, 2**64 + 5, 99999999999999999999, 0, -1):
        for op in (notes.get, notes.delete, lambda i: notes.edit(i, "a", "b"),
                   lambda i: notes.supersede(i, "new"), notes.history, notes.restore, notes.purge):
            with pytest.raises(NotFoundError, match=f"no note {nid}"):
                op(nid)
    assert [n.text for n in notes.list()] == ["a note"]


def test_text_no_backend_can_store_is_refused_on_both(notes, docs):
    for bad, why in (("a\x00b", "NUL"), ("a\udcffb", "not valid UTF-8")):
        with pytest.raises(ValidationError, match=why):
            notes.add(bad)
        with pytest.raises(ValidationError, match=why):
            notes.add("fine", session=bad)
        with pytest.raises(ValidationError, match=why):
            docs.write("d.md", bad)
    assert notes.list() == [] and docs.tree() == []
    # a NUL a person put in a file is indexed the same on both backends
    (docs.folder / "nul.md").write_bytes(b"has a \x00 NUL byte")
    assert [d.path for d in docs.tree()] == ["nul.md"]
    docs.write("nul.md", "replaced")  # and its exact bytes are kept as a version
    assert docs.history("nul.md")[0].data == b"has a \x00 NUL byte"


def test_a_damaged_sqlite_file_is_a_store_error(tmp_path):
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    notes = Notes(store, "ns", 10_000, word_count, create=True)
    for i in range(300):
        notes.add(f"note number {i} " + "padding " * 20)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    last_root = store.conn.execute("SELECT max(rootpage) FROM sqlite_master").fetchone()[0]
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    # The pages the notes filled (all past the tables' root pages): a bad page type byte.
    # The schema and the namespace stay readable, so the store opens and fails at query time.
    for start in range(last_root * page, len(data), page):
        data[start] = 0xFF
    path.write_bytes(bytes(data))
    s = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="damaged|malformed"):
        Notes(s, "ns", 10_000, None).list()
    s.close()


def test_reads_go_on_while_another_process_holds_the_write_lock(tmp_path):
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    Notes(store, "ns", 1000, word_count, create=True).add("readable while locked")
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer that holds the lock for long
    try:
        s = SqliteStore(path, busy_timeout_s=0.2)  # the migration check must not need the lock
        assert [n.text for n in Notes(s, "ns", 1000, None).list()] == ["readable while locked"]
        with pytest.raises(StoreError, match="busy"):  # a write waits its turn, then says so
            Notes(s, "ns", 1000, word_count).add("another")
        s.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_versions_are_compressed_and_old_stores_migrate(store_url):
    from lifelong.context.store.postgres import PostgresStore

    def at(version):
        if store_url.startswith("sqlite"):
            return SqliteStore(store_url[len("sqlite:///"):], migrate_to=version)
        return PostgresStore(store_url, migrate_to=version)

    text = "The same paragraph of a long document, written again and again.\n" * 2000
    old = at(3)  # a release that kept versions as plain text
    old.create_namespace("ns")
    with old.session("ns", write=True) as tx:
        tx._insert("INSERT INTO doc_versions (namespace, path, at, change, text) VALUES (?, ?, ?, ?, ?)",
                   "a.md", 1.0, "write", text)
    old.close()
    new = open_store(store_url)
    with new.session("ns") as tx:
        (v,) = tx.doc_versions("a.md")
        raw = tx._q("SELECT text, data FROM doc_versions WHERE namespace = ?").fetchone()
    assert v.text == text and v.data == text.encode()
    assert raw[0] == "" and len(bytes(raw[1])) < len(text) / 20  # compressed in place
    assert zlib.decompress(bytes(raw[1])) == text.encode()
    with new.session("ns", write=True) as tx:
        tx.doc_version_insert(DocVersion(0, "a.md", 2.0, "append", text + "more"))
    with new.session("ns") as tx:
        assert [x.text for x in tx.doc_versions("a.md")] == [text, text + "more"]
    new.close()


def test_atomic_writes_keep_the_mode_and_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.md"
        atomic_write_text(fresh, "x")
        assert fresh.stat().st_mode & 0o777 == 0o644
        fresh.chmod(0o640)
        atomic_write_text(fresh, "y")
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_temp_files_of_killed_writes_are_cleaned(tmp_path):
    target = tmp_path / "doc.md"
    code = ("import os, sys; from lifelong.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1], 'w') as fh:\n"
            "    fh.write('half'); fh.flush(); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(target)], check=False,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    stale = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(stale) == 1 and not target.exists()  # the killed write left its temp file
    # a temp file of a writer still alive is left alone
    live = tmp_path / f".doc.md.{os.getppid()}.abcd1234.tmp"
    live.write_text("in progress")
    atomic_write_text(target, "whole")
    assert target.read_text() == "whole"
    assert sorted(os.listdir(tmp_path)) == sorted(["doc.md", live.name])


def test_concurrent_writers_of_one_file_never_remove_each_others_temp_files(tmp_path):
    target = tmp_path / "doc.md"
    errors = []

    def write(i):
        try:
            for _ in range(20):
                atomic_write_text(target, f"writer {i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and target.read_text().startswith("writer ")
    assert os.listdir(tmp_path) == ["doc.md"]


def test_a_trailing_newline_makes_no_namespace_or_tag(store):
    from lifelong.context.tags import check_tags

    with pytest.raises(ValidationError, match="invalid namespace"):
        Notes(store, "acme\n", 100, word_count, create=True)
    with pytest.raises(ValidationError, match="invalid tags"):
        check_tags(["deploy\n"])
    assert store.namespaces() == []


def test_docs_in_a_workspace_that_is_a_file_is_a_clear_error(store, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LifelongError, match="cannot use"):
        Docs(store, "ns", tmp_path / "file", word_count, create=True)
