"""``Memory``: the verbs mem0 and Letta users already know, on lifelong's notes.

    from lifelong import Memory

    m = Memory("sqlite:///memory.db")
    m.add("Alice prefers tea to coffee.", user_id="alice")
    m.search("what does alice drink", user_id="alice")["results"][0]["memory"]
    m.get_all(user_id="alice")             # every memory of alice, any agent or run
    m.update(memory_id, "Alice prefers green tea.")
    m.delete(memory_id)                    # soft: history keeps it

A scope (``user_id``, ``agent_id``, ``run_id``, at least one) is a namespace
of the store, so the memories of one scope are the notes block a model sees
for it, with everything notes have: a token budget, duplicate detection,
history and soft deletes. A filter of ``get_all``/``search``/``delete_all``
matches every scope that has the given ids (``user_id="alice"`` also finds
what alice's agents and runs stored), as in mem0.

Results are mem0-shaped dicts (``{"results": [...]}``, items with ``id``,
``memory``, ``user_id``, ``agent_id``, ``run_id``, ``metadata``,
``created_at``, ``updated_at`` and, from ``search``, ``score``). Ids are
strings ``"<namespace>:<note id>"``. ``search`` ranks by BM25 over the words
of the notes, or by meaning with ``semantic=True`` (the ``embeddings`` extra).
``add`` of chat messages stores each message's text, or, with an ``llm`` and
``infer=True``, lets the model reflect on the conversation and write the note
(checked like every reflection: nothing copied from the prompt, nothing made up).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lifelong.context.grounding import STOP_WORDS
from lifelong.context.notes import Note, Notes, default_budget, word_count
from lifelong.context.store import Store, open_store
from lifelong.errors import NotFoundError, ValidationError

SCOPES = ("user", "agent", "run")  # in namespace order: user-alice.agent-bot.run-42
_RAW = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,13}$")  # kept as written; others are hashed
DEFAULT_BUDGET = 1_000_000  # tokens of one scope's block when no model sets it


def scope_namespace(user_id: str | None = None, agent_id: str | None = None,
                    run_id: str | None = None) -> str:
    """The namespace of a scope: ``user-alice``, ``user-alice.agent-support``, …
    An id that is not a short plain word (an e-mail address, a UUID) is named by
    a hash, ``x-<12 hex>``; the mapping is one-to-one either way."""
    parts = []
    for key, value in zip(SCOPES, (user_id, agent_id, run_id), strict=True):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{key}_id must be a non-empty string, got {value!r}")
        parts.append(f"{key}-{_encode(value)}")
    if not parts:
        raise ValidationError("a memory needs a scope", hint="give user_id, agent_id or run_id")
    return ".".join(parts)


def _encode(value: str) -> str:
    return value if _RAW.match(value) else "x-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def _scope_of(namespace: str) -> dict[str, str] | None:
    """{"user": encoded id, …} of a scope namespace; None for other namespaces."""
    out: dict[str, str] = {}
    for part in namespace.split("."):
        key, sep, value = part.partition("-")
        if not sep or key not in SCOPES or key in out or not value:
            return None
        out[key] = value
    return out


class Memory:
    """Memories scoped per user, agent and run, with mem0's verbs.

    ``store`` is a store URL (``sqlite:///…``, ``postgresql://…``) or an open
    :class:`Store` (default: the user's store). ``llm`` (optional) counts tokens
    with its own tokenizer, sets each scope's budget from its context window and
    can write memories from a conversation (``infer``); without one, tokens are
    whitespace words and the budget is ``budget_tokens``.
    """

    def __init__(self, store: str | Store | None = None, *, llm: Any = None,
                 count_tokens: Callable[[str], int] | None = None, budget_tokens: int | None = None,
                 docs_root: str | Path | None = None, author: str = "") -> None:
        self._own_store = not isinstance(store, Store)
        self.store = open_store(store) if self._own_store else store
        self.llm = llm
        self.count_tokens = count_tokens or (llm.count_tokens if llm is not None else word_count)
        if budget_tokens is None:
            budget_tokens = default_budget(int(llm.context_window)) if llm is not None else DEFAULT_BUDGET
        self.budget_tokens = budget_tokens
        self.docs_root = Path(docs_root) if docs_root is not None else None
        self.author = author or (getattr(llm, "name", "") if llm is not None else "")
        self._vectors: dict[str, Any] = {}  # note text -> unit vector (semantic search)
        self._embedder: Any = None

    # -- the verbs ---------------------------------------------------------------
    def add(self, messages: str | Sequence[dict[str, Any]], *, user_id: str | None = None,
            agent_id: str | None = None, run_id: str | None = None,
            metadata: dict[str, str] | None = None, infer: bool | None = None) -> dict[str, Any]:
        """Remember ``messages``: a text, or chat messages (``{"role", "content"}``).

        A text is stored as it is. Messages are stored one memory per message with
        text, unless ``infer`` (default: True when this Memory has an ``llm``): then
        the model reflects on the conversation and writes what a later
        conversation should know.
        An item's ``event`` is ``ADD``, or ``NONE`` when a memory of the scope
        already says the same (that memory is returned)."""
        ns = scope_namespace(user_id, agent_id, run_id)
        notes = self._notes(ns, create=True)
        tags = _tags(metadata)
        if infer is None:
            infer = self.llm is not None and not isinstance(messages, str)
        if infer:
            return {"results": self._infer(notes, messages, tags)}
        texts = [messages] if isinstance(messages, str) else [_text(m) for m in messages]
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValidationError("nothing to remember", hint="give a text or messages with content")
        results = []
        for text in texts:
            r = notes.add(text, tags=tags, model=self.author)
            results.append(self._item(r.note, event="ADD" if r.created else "NONE"))
        return {"results": results}

    def get(self, memory_id: str) -> dict[str, Any]:
        """One memory by id (deleted and superseded ones too, with their ``status``)."""
        notes, note_id = self._locate(memory_id)
        return self._item(notes.get(note_id))

    def get_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                run_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        """The active memories of every scope matching the filter, oldest first."""
        items = [self._item(n) for n in self._active(user_id, agent_id, run_id)]
        return {"results": items[:limit]}

    def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
               run_id: str | None = None, limit: int = 10, threshold: float | None = None,
               semantic: bool = False) -> dict[str, Any]:
        """Memories of the matching scopes, best first: BM25 over words, or cosine
        similarity of sentence embeddings with ``semantic=True``. ``threshold``
        drops results scoring below it."""
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("empty search query", hint="give one or more words")
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        active = self._active(user_id, agent_id, run_id)
        scores = self._semantic(query, active) if semantic else bm25(query, [n.text for n in active])
        ranked = sorted(zip(scores, active, strict=True), key=lambda sn: (-sn[0], sn[1].id))
        keep = [(s, n) for s, n in ranked if (s > 0 if threshold is None else s >= threshold)]
        return {"results": [self._item(n, score=s) for s, n in keep[:limit]]}

    def update(self, memory_id: str, data: str) -> dict[str, Any]:
        """Replace a memory's text. The new text gets a new id (the old memory stays,
        superseded, in history); the result names both."""
        notes, note_id = self._locate(memory_id)
        new = notes.supersede(note_id, data, model=self.author)
        return {"message": "Memory updated successfully!", "id": self._id(new), "previous_id": memory_id,
                "memory": new.text}

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Soft delete: the memory leaves its scope's block; ``history`` keeps it."""
        notes, note_id = self._locate(memory_id)
        notes.delete(note_id, reason="Memory.delete", model=self.author)
        return {"message": "Memory deleted successfully!", "id": memory_id}

    def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None) -> dict[str, Any]:
        """Soft-delete every active memory of the matching scopes (a filter is required)."""
        scope_namespace(user_id, agent_id, run_id)  # refuses an empty filter: not everything at once
        gone = 0
        for ns in self._namespaces(user_id, agent_id, run_id):
            notes = self._notes(ns)
            for note in notes.list():
                notes.delete(note.id, reason="Memory.delete_all", model=self.author)
                gone += 1
        return {"message": f"{gone} memories deleted successfully!", "deleted": gone}

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        """Every recorded change of a memory, oldest first (``event``: ADD, UPDATE,
        DELETE, …), each with the text before and after."""
        notes, note_id = self._locate(memory_id)
        events = {"add": "ADD", "edit": "UPDATE", "supersede": "ADD", "superseded": "UPDATE",
                  "delete": "DELETE", "restore": "RESTORE", "duplicate": "NONE"}
        return [{"id": memory_id, "event": events.get(e.kind, e.kind.upper()), "old_memory": e.old_text,
                 "new_memory": e.new_text, "related_id": f"{notes.namespace}:{e.related_id}"
                 if e.related_id else None, "created_at": _iso(e.at)} for e in notes.history(note_id)]

    def notes(self, *, user_id: str | None = None, agent_id: str | None = None,
              run_id: str | None = None) -> Notes:
        """The :class:`Notes` of one scope (exactly that scope), for everything else notes do:
        ``render()`` is the block to put in a prompt."""
        return self._notes(scope_namespace(user_id, agent_id, run_id), create=True)

    def close(self) -> None:
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------
    def _notes(self, namespace: str, *, create: bool = False) -> Notes:
        return Notes(self.store, namespace, self.budget_tokens, self.count_tokens, model=self.author,
                     create=create)

    def _namespaces(self, user_id: str | None, agent_id: str | None, run_id: str | None) -> list[str]:
        want = {k: _encode(v) for k, v in zip(SCOPES, (user_id, agent_id, run_id), strict=True)
                if v is not None}
        out = []
        for ns in self.store.namespaces():
            scope = _scope_of(ns)
            if scope is not None and all(scope.get(k) == v for k, v in want.items()):
                out.append(ns)
        return out

    def _active(self, user_id: str | None, agent_id: str | None, run_id: str | None) -> list[Note]:
        active: list[Note] = []
        for ns in self._namespaces(user_id, agent_id, run_id):
            active += self._notes(ns).list()
        return sorted(active, key=lambda n: (n.created, n.id))

    def _locate(self, memory_id: str) -> tuple[Notes, int]:
        ns, sep, raw = str(memory_id).rpartition(":")
        if not sep or not raw.isdigit() or _scope_of(ns) is None:
            raise ValidationError(f"{memory_id!r} is not a memory id",
                                  hint="use the id a result gave, e.g. 'user-alice:12'")
        if not self.store.has_namespace(ns):
            raise NotFoundError(f"no memory {memory_id!r}")
        return self._notes(ns), int(raw)

    def _id(self, note: Note) -> str:
        return f"{note.namespace}:{note.id}"

    def _item(self, note: Note, *, event: str | None = None, score: float | None = None) -> dict[str, Any]:
        scope = _scope_of(note.namespace) or {}
        item: dict[str, Any] = {"id": self._id(note), "memory": note.text, "hash": _hash(note.text),
                                "metadata": _metadata(note.tags), "created_at": _iso(note.created),
                                "updated_at": _iso(note.updated), "status": note.status}
        for key in SCOPES:
            item[f"{key}_id"] = scope.get(key)  # as stored: a long id appears by its hash
        if event is not None:
            item["event"] = event
        if score is not None:
            item["score"] = score
        return item

    def _infer(self, notes: Notes, messages: str | Sequence[dict[str, Any]],
               tags: list[str]) -> list[dict[str, Any]]:
        from lifelong.context.session import Session, SessionConfig

        if self.llm is None:
            raise ValidationError("infer=True needs a model", hint="Memory(store, llm=load_llm('local'))")
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        outcome = Session(self.llm, notes, None, SessionConfig(use_docs=False)).reflect_on(msgs)
        results = []
        for note_id in outcome.notes_written:
            note = notes.get(note_id)
            if tags:
                note = notes.supersede(note.id, note.text, tags=list(dict.fromkeys([*note.tags, *tags])),
                                       model=self.author) if set(tags) - set(note.tags) else note
            results.append(self._item(note, event="ADD"))
        return results

    def _semantic(self, query: str, active: Sequence[Note]) -> list[float]:
        if not active:
            return []
        if self._embedder is None:
            from lifelong.context.embeddings import Embedder

            self._embedder = Embedder()
        todo = [n.text for n in active if n.text not in self._vectors]
        if todo:
            for text, vec in zip(todo, self._embedder.encode(todo), strict=True):
                self._vectors[text] = vec
        q = self._embedder.encode([query])[0]
        return [float(self._vectors[n.text] @ q) for n in active]


# -- ranking ----------------------------------------------------------------------------------


def _terms(text: str) -> list[str]:
    # case-folded words, plurals and possessives folded onto their stem
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in re.findall(r"\w+", text.casefold())]


def bm25(query: str, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each text for ``query`` (Robertson & Zaragoza 2009, eq. 3.23,
    with the non-negative idf log(1 + (N − n + 0.5) / (n + 0.5))). Stop words of
    the query ("what", "the") are left out unless it has nothing else."""
    docs = [Counter(_terms(t)) for t in texts]
    if not docs:
        return []
    query_terms = set(_terms(query))
    query_terms = (query_terms - STOP_WORDS) or query_terms
    n_docs = len(docs)
    avg = sum(sum(d.values()) for d in docs) / n_docs or 1.0
    scores = [0.0] * n_docs
    for term in query_terms:
        having = sum(1 for d in docs if term in d)
        if not having:
            continue
        idf = math.log(1 + (n_docs - having + 0.5) / (having + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                length = sum(d.values())
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
    return scores


def _text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, list):
            return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    raise ValidationError(f"a message is a dict with 'role' and 'content', got {type(message).__name__}")


def _tags(metadata: dict[str, str] | None) -> list[str]:
    """metadata {"category": "food"} → tags ["category:food"] (the notes' tags)."""
    if not metadata:
        return []
    if not isinstance(metadata, dict):
        raise ValidationError("metadata is a dict of short strings")
    from lifelong.context.tags import TAG_RULE, is_tag

    tags = [f"{k}:{v}" for k, v in metadata.items()]
    bad = [t for (k, _), t in zip(metadata.items(), tags, strict=True) if ":" in str(k) or not is_tag(t)]
    if bad:
        raise ValidationError(f"metadata {bad!r} cannot be stored", hint=TAG_RULE + " (key:value)")
    return tags


def _metadata(tags: Sequence[str]) -> dict[str, str]:
    return dict(t.split(":", 1) for t in tags if ":" in t)


def _hash(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


__all__ = ["Memory", "bm25", "scope_namespace"]
