"""Strategies: what a new instance inherits from the ones before it.

A strategy decides three things and nothing else: which memory a session gets
(notes, docs, both or neither), which note operations the writer's reflection
may use, and what extra text goes into the context (the previous transcript).
The protocol asks the strategy, never the other way round, so a new strategy
is one small object: subclass ``Strategy`` or build one with other fields,
then ``register_strategy`` it.

Built in, from least to most machinery:

- ``none``: every instance starts blank — the baseline.
- ``transcript``: no notes; the writer's last transcript is pasted into the
  next contexts (what naive "just keep the history" does).
- ``add-only``: notes, but reflection may only add (no edit, supersede, delete).
- ``notes``: notes with every operation, no documentation.
- ``full``: the lifelong system: notes with every operation plus documentation.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.context.notes import ALL_NOTE_OPS
from lifelong.errors import ConfigError

NAMESPACE = "learn"


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str = ""
    notes: bool = False
    docs: bool = False
    note_ops: frozenset[str] = field(default_factory=frozenset)
    transcript: bool = False

    @property
    def reflects(self) -> bool:
        return self.notes or self.docs

    def session_options(self, role: str, previous_transcript: Sequence[dict] | None) -> dict[str, Any]:
        """``SessionConfig`` fields for a ``role`` ("writer" | "reader") session."""
        return {
            "reflect": role == "writer" and self.reflects,
            "note_ops": self.note_ops if role == "writer" else frozenset(),
            "use_docs": self.docs,
            "preamble": self.preamble(previous_transcript),
        }

    def preamble(self, previous_transcript: Sequence[dict] | None) -> str | None:
        if not self.transcript or not previous_transcript:
            return None
        lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in previous_transcript]
        return "Transcript of the previous task:\n" + "\n".join(lines)


_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> None:
    _STRATEGIES[strategy.name] = strategy


def strategy_names() -> list[str]:
    return list(_STRATEGIES)  # registration order: least to most machinery


def get_strategy(name: str) -> Strategy:
    if name not in _STRATEGIES:
        raise ConfigError(
            f"unknown strategy {name!r}", hint=f"use one of {', '.join(strategy_names())} or 'all'"
        )
    return _STRATEGIES[name]


for _s in (
    Strategy("none", "no memory: every instance starts blank"),
    Strategy("transcript", "the previous writer transcript in context", transcript=True),
    Strategy("add-only", "notes, add only (no edit/supersede/delete)", notes=True,
             note_ops=frozenset({"add"})),
    Strategy("notes", "notes with every operation, no documentation", notes=True, note_ops=ALL_NOTE_OPS),
    Strategy("full", "notes with every operation plus documentation", notes=True, docs=True,
             note_ops=ALL_NOTE_OPS),
):
    register_strategy(_s)


# --- Memory on disk -----------------------------------------------------------


class MemoryFolder:
    """The notes store and docs workspace of one run, in one folder.

    ``folder/store.db`` (SQLite) and ``folder/docs/``. Each session gets fresh
    ``Notes``/``Docs`` objects over the same files ("a new instance with those
    memories"); ``snapshot`` copies both so the state after every episode is
    kept and a resumed run restarts from exactly that state.
    """

    def __init__(self, folder: str | Path, llm: Any, strategy: Strategy, note_budget_tokens: int) -> None:
        self.folder = Path(folder)
        self.llm = llm
        self.strategy = strategy
        self.note_budget_tokens = note_budget_tokens
        self._store = None

    @property
    def db_path(self) -> Path:
        return self.folder / "store.db"

    @property
    def docs_root(self) -> Path:
        return self.folder / "docs"

    def open(self) -> tuple[Any, Any]:
        """(notes, docs) for one session; ``None`` for what the strategy does not use."""
        self.close()
        if not self.strategy.reflects:
            return None, None
        from lifelong.context.docs import Docs
        from lifelong.context.notes import Notes
        from lifelong.context.store import open_store

        self.folder.mkdir(parents=True, exist_ok=True)
        self._store = open_store(f"sqlite:///{self.db_path}")
        model = str(getattr(self.llm, "name", "") or "")
        notes = docs = None
        if self.strategy.notes:
            notes = Notes(self._store, NAMESPACE, self.note_budget_tokens, self.llm.count_tokens,
                          model=model, create=True)
        if self.strategy.docs:
            docs = Docs(self._store, NAMESPACE, self.docs_root, self.llm.count_tokens, model=model, create=True)
        return notes, docs

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def notes_text(self) -> str:
        if not self.strategy.notes or not self.db_path.exists():
            return ""
        notes, _ = self.open()
        try:
            return notes.render()
        finally:
            self.close()

    def doc_texts(self) -> dict[str, str]:
        folder = self.docs_root / NAMESPACE
        if not self.strategy.docs or not folder.is_dir():
            return {}
        return {
            p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    def sizes(self) -> tuple[int, int]:
        """(note tokens, doc tokens) of the memory as it stands."""
        count = self.llm.count_tokens
        notes = self.notes_text()
        return (count(notes) if notes else 0, sum(count(t) for t in self.doc_texts().values() if t))

    def snapshot(self, dest: str | Path) -> None:
        """Copy the memory to ``dest`` (replacing it): the state after an episode."""
        self.close()
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.db_path.exists():
            _copy_sqlite(self.db_path, tmp / "store.db")
        if self.docs_root.exists():
            shutil.copytree(self.docs_root, tmp / "docs")
        # Swap in whole: a crash leaves either the old snapshot or the new one.
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)

    def restore(self, src: str | Path | None) -> None:
        """Make the live memory equal to snapshot ``src`` (``None``: empty)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        if src is None:
            return
        src = Path(src)
        if (src / "store.db").exists():
            _copy_sqlite(src / "store.db", self.db_path)
        if (src / "docs").exists():
            shutil.copytree(src / "docs", self.docs_root)


def _copy_sqlite(src: Path, dst: Path) -> None:
    # The backup API copies a consistent database even with a WAL beside it.
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    source.close()
    target.close()
