"""``lifelong bench store``: speed of the context store on SQLite and PostgreSQL.

Three figures per backend, on synthetic text drawn from a seeded vocabulary:

- render: ``Notes.render()`` of a namespace holding ``n_notes`` active notes
  (median of repeated renders, milliseconds);
- search: ``Docs.search()`` over ``n_docs`` indexed documents, p50 and p99 of
  ``n_queries`` one-to-three-word queries (the index query; the on-disk
  rescan that picks up hand edits is timed separately as ``rescan_ms``; the
  store's ``optimize()`` runs after the bulk load, as autovacuum would);
- writes/s: ``Notes.add`` calls per second, each its own durable transaction
  with duplicate check and budget check (whitespace-word token counter, so the
  figure is the store's, not a tokenizer's).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifelong.context.docs import Docs, compose_document
from lifelong.context.notes import Notes, word_count
from lifelong.context.store import NoteRow, Store, open_store


@dataclass
class BenchConfig:
    n_notes: int = 10_000
    n_docs: int = 10_000
    n_queries: int = 200
    n_writes: int = 300
    render_repeats: int = 20
    words_per_note: int = 12
    words_per_doc: int = 150
    seed: int = 0


@dataclass
class BenchResult:
    backend: str
    render_ms: float
    search_p50_ms: float
    search_p99_ms: float
    rescan_ms: float
    writes_s: float
    index_s: float  # time to index n_docs files from scratch


def vocabulary(size: int = 3000, seed: int = 0) -> list[str]:
    """English words from wonderwords' lists when installed, else pseudo-words."""
    try:
        from importlib.resources import files

        assets = files("wonderwords.assets")
        words = sorted({w.strip().lower() for name in ("nounlist.txt", "verblist.txt", "adjectivelist.txt")
                        for w in assets.joinpath(name).read_text().split() if w.isalpha()})
    except (ImportError, FileNotFoundError):
        words = [f"tok{i}" for i in range(size)]
    rng = random.Random(seed)
    return rng.sample(words, min(size, len(words)))


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def bench_backend(name: str, store: Store, workdir: Path, cfg: BenchConfig,
                  progress: Callable[[str], None] = lambda s: None) -> BenchResult:
    rng = random.Random(cfg.seed)
    vocab = vocabulary(seed=cfg.seed)
    tag = f"{name}-{rng.getrandbits(32):08x}"

    def sentence(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    # -- render with n_notes notes (inserted in one transaction: setup, not measured)
    ns_notes = f"bench-notes-{tag}"
    store.create_namespace(ns_notes)
    now = time.time()
    with store.session(ns_notes, write=True) as tx:
        for i in range(cfg.n_notes):
            text = sentence(cfg.words_per_note)
            tx.note_insert(NoteRow(0, ns_notes, text, "active", now + i * 1e-3, now, "bench", "", "",
                                   [], word_count(text)))
    notes = Notes(store, ns_notes, 10**9, word_count)
    progress(f"{name}: render {cfg.n_notes} notes")
    times = []
    for _ in range(cfg.render_repeats):
        t = time.perf_counter()
        block = notes.render()
        times.append(time.perf_counter() - t)
    if block.count("\n- [") != cfg.n_notes:
        raise RuntimeError(f"rendered block holds {block.count(chr(10) + '- [')} notes, not {cfg.n_notes}")
    render_ms = statistics.median(times) * 1e3

    # -- search over n_docs documents (files written directly, then indexed by a scan)
    ns_docs = f"bench-docs-{tag}"
    store.create_namespace(ns_docs)
    docs = Docs(store, ns_docs, workdir / "docs", word_count, rescan_interval_s=float("inf"))
    for i in range(cfg.n_docs):
        path = docs.folder / f"topic{i // 100:03d}" / f"doc{i:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"description": sentence(6), "tags": [rng.choice(vocab)]}
        path.write_text(compose_document(meta, sentence(cfg.words_per_doc) + "\n"))
    progress(f"{name}: index {cfg.n_docs} docs")
    t = time.perf_counter()
    indexed = docs.sync()
    index_s = time.perf_counter() - t
    if indexed != cfg.n_docs:
        raise RuntimeError(f"indexed {indexed} documents, not {cfg.n_docs}")
    store.optimize()  # statistics after a bulk load, as a running server's autovacuum would
    t = time.perf_counter()
    docs.sync()  # nothing changed: the cost of looking for hand edits
    rescan_ms = (time.perf_counter() - t) * 1e3
    progress(f"{name}: {cfg.n_queries} searches")
    times = []
    for _ in range(cfg.n_queries):
        query = sentence(rng.randint(1, 3))
        t = time.perf_counter()
        docs.search(query, limit=10)
        times.append(time.perf_counter() - t)
    p50, p99 = _percentile(times, 0.5) * 1e3, _percentile(times, 0.99) * 1e3

    # -- writes/s: full Notes.add calls, one durable transaction each
    ns_writes = f"bench-writes-{tag}"
    writer = Notes(store, ns_writes, 10**9, word_count, create=True)
    progress(f"{name}: {cfg.n_writes} writes")
    texts = [f"{i} {sentence(cfg.words_per_note)}" for i in range(cfg.n_writes)]
    t = time.perf_counter()
    for text in texts:
        writer.add(text)
    writes_s = cfg.n_writes / (time.perf_counter() - t)
    return BenchResult(name, render_ms, p50, p99, rescan_ms, writes_s, index_s)


def run_bench(cfg: BenchConfig, postgres_url: str | None = None, *, backends: tuple[str, ...] = ("sqlite", "postgres"),
              progress: Callable[[str], None] = lambda s: None) -> list[BenchResult]:
    """Run the benchmark on each backend; PostgreSQL on a temporary server
    unless ``postgres_url`` names one (it then gets fresh namespaces)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="lifelong-bench-") as tmp:
        root = Path(tmp)
        if "sqlite" in backends:
            with open_store(f"sqlite:///{root / 'bench.db'}") as store:
                results.append(bench_backend("sqlite", store, root / "sqlite", cfg, progress))
        if "postgres" in backends:
            if postgres_url:
                with open_store(postgres_url) as store:
                    results.append(bench_backend("postgres", store, root / "pg", cfg, progress))
            else:
                from lifelong.context.store.temp_postgres import TempPostgres

                progress("starting a temporary PostgreSQL server")
                with TempPostgres(fsync=True) as pg, open_store(pg.new_database()) as store:
                    results.append(bench_backend("postgres", store, root / "pg", cfg, progress))
    return results
