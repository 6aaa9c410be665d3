"""Reliability with real processes on both backends: kill -9 mid-batch loses
no committed write and corrupts nothing; four concurrent writers lose no update."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lifelong.context import Docs, Notes, open_store, parse_document, word_count

WORKER = str(Path(__file__).with_name("_worker.py"))
NS = "shared"


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_batch_loses_no_committed_write(store_url, tmp_path):
    root = tmp_path / "ws"
    with open_store(store_url) as s:
        s.create_namespace(NS)
    proc = _spawn("forever", store_url, str(root))
    committed_notes: dict[int, int] = {}
    committed_docs: list[tuple[str, int]] = []
    try:
        while len(committed_notes) < 60:
            line = proc.stdout.readline()
            assert line, f"worker died: {proc.stderr.read()}"
            kind, key, i = line.split()
            if kind == "N":
                committed_notes[int(key)] = int(i)
            else:
                committed_docs.append((key, int(i)))
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-batch: the worker never pauses between writes
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = open_store(store_url)
    if store_url.startswith("sqlite"):
        assert store.integrity_check() == "ok"
    notes = Notes(store, NS, 10**9, word_count)
    stored = {n.id: n for n in notes.list()}
    for note_id, i in committed_notes.items():
        assert stored[note_id].text == f"committed note number {i} with payload {'x' * (i % 50 + 1)}"
        assert [e.kind for e in notes.history(note_id)] == ["add"]
    # At most the one write in flight may have landed beyond what was reported.
    assert len(stored) - len(committed_notes) in (0, 1)
    docs = Docs(store, NS, root, word_count)
    for path, i in committed_docs:
        meta, body = parse_document((docs.folder / path).read_text())
        assert meta["description"] == f"doc {i}" and body == f"document {i}\n" * 50
    assert [d.error for d in docs.tree()] == [""] * len(docs.tree())  # no half-written file
    assert len(docs.search("document")) > 0
    # The store is not left locked: a new writer goes on.
    assert notes.add("written after the crash").created
    store.close()


def test_four_processes_writing_at_once_lose_no_update(store_url, tmp_path):
    root = tmp_path / "ws"
    n = 24
    with open_store(store_url) as s:
        notes = Notes(s, NS, 10**9, word_count, create=True)
        counter = notes.add("counter [0]").note
        Docs(s, NS, root, word_count).write("log.md", "", description="shared log")
    procs = [_spawn("share", store_url, str(root), str(w), str(n)) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    with open_store(store_url) as s:
        notes = Notes(s, NS, 10**9, word_count)
        texts = {x.text for x in notes.list()}
        expected = {f"worker {w} distinct note {i} w{w}i{i}" for w in range(4) for i in range(n)}
        assert expected <= texts and len(texts) == len(expected) + 1
        assert notes.get(counter.id).text == f"counter [{4 * n // 2}]"
        edits = [e for e in notes.history(counter.id) if e.kind == "edit"]
        assert len(edits) == 4 * n // 2
        lines = Docs(s, NS, root, word_count).read("log.md", max_tokens=10**6).text.split("---\n\n", 1)[1]
        got = sorted(lines.splitlines())
        assert got == sorted(f"worker {w} line {i}" for w in range(4) for i in range(0, n, 4))
