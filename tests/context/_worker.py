"""A real separate process that writes notes and docs, for the reliability tests.

    python _worker.py forever URL ROOT          # write until killed; report each commit
    python _worker.py share URL ROOT WORKER N   # N notes, N/2 counter bumps, N/4 doc appends
"""

from __future__ import annotations

import sys

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.errors import ValidationError

NAMESPACE = "shared"


def forever(url: str, root: str) -> None:
    store = open_store(url)
    notes = Notes(store, NAMESPACE, 10**9, word_count)
    docs = Docs(store, NAMESPACE, root, word_count)
    i = 0
    while True:
        note = notes.add(f"committed note number {i} with payload {'x' * (i % 50 + 1)}").note
        print(f"N {note.id} {i}", flush=True)  # printed only after the commit returned
        if i % 3 == 0:
            docs.write(f"batch/d{i}.md", f"document {i}\n" * 50, description=f"doc {i}")
            print(f"D batch/d{i}.md {i}", flush=True)
        i += 1


def share(url: str, root: str, worker: int, n: int) -> None:
    store = open_store(url)
    notes = Notes(store, NAMESPACE, 10**9, word_count)
    docs = Docs(store, NAMESPACE, root, word_count)
    counter = next(x for x in notes.list() if x.text.startswith("counter"))
    for i in range(n):
        notes.add(f"worker {worker} distinct note {i} w{worker}i{i}")
        if i % 2 == 0:
            # Read-modify-write with str_replace: a stale read fails and is retried,
            # so no increment can overwrite another.
            while True:
                k = int(notes.get(counter.id).text.split("[")[1].rstrip("]"))
                try:
                    notes.edit(counter.id, f"[{k}]", f"[{k + 1}]")
                    break
                except ValidationError:
                    continue
        if i % 4 == 0:
            docs.append("log.md", f"worker {worker} line {i}\n")


if __name__ == "__main__":
    mode, url, root, *rest = sys.argv[1:]
    if mode == "forever":
        forever(url, root)
    else:
        share(url, root, int(rest[0]), int(rest[1]))
