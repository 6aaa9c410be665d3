"""How much the store keeps for a document written 16 times at 1.5 MB.

Two cases, on SQLite and on PostgreSQL (a temporary server, fsync on):
``edits`` rewrites one line in fifty between writes (the same document,
edited), ``rewrites`` writes a new document each time. Text is drawn with a
fixed seed from the word lists of ``lifelong bench store``: random words
compress worse than prose, so the ratios are a floor. Prints the store's size
after the writes (SQLite: the file and its WAL after a checkpoint;
PostgreSQL: the database minus an empty one) and the number of versions kept.

Uses only the public API, so the same script measures any commit:
``PYTHONPATH=src python configs/bench/doc_versions_size.py``.
"""

import random
import tempfile
from pathlib import Path

from lifelong.bench.store import vocabulary
from lifelong.context import Docs, open_store, word_count
from lifelong.context.store.temp_postgres import TempPostgres

WRITES, CHARS = 16, 1_500_000
vocab = vocabulary(seed=0)


def lines_of_text(rng: random.Random) -> list[str]:
    lines, n = [], 0
    while n < CHARS:
        line = " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 16))).capitalize() + ".\n"
        lines.append(line)
        n += len(line)
    return lines


def run(url: str, root: Path, kind: str, empty_pg: int) -> tuple[int, int]:
    rng = random.Random(0)
    store = open_store(url)
    docs = Docs(store, "bench", root / "docs", word_count, create=True, max_doc_chars=10**8)
    lines = lines_of_text(rng)
    for _ in range(WRITES):
        if kind == "edits":  # the same document, one line in fifty rewritten each time
            for j in rng.sample(range(len(lines)), len(lines) // 50):
                lines[j] = " ".join(rng.choice(vocab) for _ in range(12)).capitalize() + ".\n"
        else:  # a new document each time
            lines = lines_of_text(rng)
        docs.write("big.md", "".join(lines))
    if url.startswith("sqlite"):
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db = Path(url[len("sqlite:///"):])
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    else:
        size = store.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] - empty_pg
    versions = len(docs.history("big.md"))
    store.close()
    return size, versions


with tempfile.TemporaryDirectory() as tmp, TempPostgres(fsync=True) as pg:
    root = Path(tmp)
    with open_store(pg.new_database()) as empty:
        empty_pg = empty.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    for kind in ("edits", "rewrites"):
        for backend in ("sqlite", "postgres"):
            url = f"sqlite:///{root / (kind + '.db')}" if backend == "sqlite" else pg.new_database()
            size, versions = run(url, root / f"{kind}-{backend}", kind, empty_pg)
            print(f"{kind:9s} {backend:9s} versions={versions} store_MB={size / 1e6:.1f}")
