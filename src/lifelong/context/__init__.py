"""Context memory: notes kept in every prompt, documentation read on demand.

- :class:`Notes` — short memories of one namespace, with a token budget.
- :class:`Docs` — Markdown documents on disk with a search index.
- :func:`open_store` — SQLite (default) or PostgreSQL storage for both.
- :class:`Memory` — mem0's verbs (add, search, get_all, update, delete) on notes,
  scoped per user, agent and run.
"""

from lifelong.context.docs import (
    DocInfo,
    Docs,
    Page,
    compose_document,
    default_docs_root,
    parse_document,
)
from lifelong.context.memory import Memory, scope_namespace
from lifelong.context.notes import (
    AddResult,
    Note,
    NoteChange,
    Notes,
    NotesStats,
    OverBudget,
    budget_for,
    default_budget,
    render_notes,
    word_count,
)
from lifelong.context.store import DocVersion, SearchHit, Store, default_store_url, open_store

__all__ = [
    "AddResult",
    "DocInfo",
    "DocVersion",
    "Docs",
    "Memory",
    "Note",
    "NoteChange",
    "Notes",
    "NotesStats",
    "OverBudget",
    "Page",
    "SearchHit",
    "Store",
    "budget_for",
    "compose_document",
    "default_budget",
    "default_docs_root",
    "default_store_url",
    "open_store",
    "parse_document",
    "render_notes",
    "scope_namespace",
    "word_count",
]
