"""Notes: short memories every future instance sees in its context.

A model finishing a task writes what a fresh instance would not know, in as
few tokens as it can (seed *Prosaic continual learning*). The notes of a
namespace are rendered as one block at the top of every prompt, so the block
has a token budget: by default the model's context window minus a reserve for
the task itself, as the seed computes (1M window − 500k task buffer = 500k
for memories). A write that would push the block over the budget is refused,
or handed to ``on_over_budget`` (e.g. consolidation) and retried once; the
block is never silently truncated.

Nothing is lost: edits, supersessions and deletions are recorded in each
note's history; only ``purge`` removes a note for real.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lifelong.atomic import atomic_write_text
from lifelong.context.store.base import (
    MAX_ID,
    NoteEvent,
    NoteRow,
    Store,
    Tx,
    check_storable,
    validate_namespace,
)
from lifelong.context.tags import check_tags
from lifelong.errors import (
    BudgetExceededError,
    BudgetWarning,
    ConfigError,
    NotFoundError,
    ValidationError,
)

TokenCounter = Callable[[str], int]
Note = NoteRow  # the public name of a stored note
NoteChange = NoteEvent  # one entry of a note's history

# The seed's arithmetic: a 1M-token window minus a 500k task buffer leaves 500k
# for memories. By default half the window is reserved for the task.
DEFAULT_TASK_RESERVE_FRACTION = 0.5
NOTES_HEADER = "## Notes"
# What may be done to notes (reflection and strategies choose a subset).
ALL_NOTE_OPS = frozenset({"add", "edit", "supersede", "delete"})
_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "without", "cannot", "dont",
                        "don", "doesn", "isn", "aren", "won", "shouldn", "mustn", "avoid"})


def default_budget(context_window: int, task_reserve: int | None = None) -> int:
    """Tokens left for notes: ``context_window - task_reserve`` (reserve: half the window)."""
    if context_window <= 0:
        raise ConfigError(f"context window must be positive, got {context_window}")
    reserve = int(context_window * DEFAULT_TASK_RESERVE_FRACTION) if task_reserve is None else task_reserve
    budget = context_window - reserve
    if reserve < 0 or budget <= 0:
        raise ConfigError(
            f"task reserve {reserve} leaves no room for notes in a {context_window}-token window",
            hint="use a smaller --task-reserve or a model with a longer context window",
        )
    return budget


def budget_for(llm: object, task_reserve: int | None = None) -> int:
    """:func:`default_budget` of a model object with ``.context_window``."""
    return default_budget(int(llm.context_window), task_reserve)  # type: ignore[attr-defined]


def word_count(text: str) -> int:
    """A deterministic stand-in tokenizer (whitespace words) for tests and benchmarks."""
    return len(text.split())


# -- rendering: the block a model reads ------------------------------------------------------


def render_notes(notes: Sequence[Note] | Sequence[tuple[int, str]]) -> str:
    """The notes block: a header and one bullet per note, ``[id]`` first so a
    model can name the note it wants to edit. Order is (created, id): stable,
    and new notes append at the end, so earlier prompts stay a prefix-friendly
    match. An empty set renders as the empty string. Takes notes or (id, text)."""
    if not notes:
        return ""
    lines = [NOTES_HEADER]
    for n in notes:
        note_id, text = (n.id, n.text) if isinstance(n, NoteRow) else n
        lines.append(f"- [{note_id}] " + text.replace("\n", "\n  "))
    return "\n".join(lines) + "\n"


# -- duplicate detection ---------------------------------------------------------------------


def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed, without trailing punctuation: exact-duplicate key."""
    return re.sub(r"\s+", " ", text.casefold()).strip().rstrip(".!;,")


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.casefold()))


def similarity(a: str, b: str) -> float:
    """Jaccard index of the two texts' word sets (1.0 for identical sets)."""
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def is_near_duplicate(a: str, b: str, threshold: float) -> tuple[bool, float]:
    """Near duplicate: word-set Jaccard ≥ ``threshold`` and the differing words
    include no negation ("always X" vs "never X" share most words but mean the
    opposite, so they are kept apart)."""
    wa, wb = _words(a), _words(b)
    sim = similarity(a, b)
    return sim >= threshold and not ((wa ^ wb) & _NEGATIONS), sim


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddResult:
    """What ``add`` did: a new note, or the existing note the text duplicates."""

    note: Note
    created: bool
    duplicate: str | None = None  # "exact" | "near" | None
    similarity: float = 0.0


@dataclass(frozen=True)
class OverBudget:
    """Passed to ``on_over_budget``: the write that did not fit."""

    namespace: str
    operation: str
    budget_tokens: int
    tokens_before: int
    tokens_after: int

    @property
    def excess(self) -> int:
        return self.tokens_after - self.budget_tokens


@dataclass(frozen=True)
class NotesStats:
    namespace: str
    active_notes: int
    tokens_used: int  # rendered block, by the current tokenizer
    budget_tokens: int
    free_tokens: int
    growth_per_day: float  # tokens/day over the window, from the recorded history
    days_left: float | None  # None: not growing
    window_days: float  # the span growth was measured over (at least one day)
    first_event: float | None  # unix time of the oldest recorded event


class _Refused(Exception):
    def __init__(self, info: OverBudget) -> None:
        self.info = info


# -- the notes of one namespace --------------------------------------------------------------


class Notes:
    """The notes of one namespace, with a token budget.

    ``count_tokens`` is the active model's tokenizer (``llm.count_tokens``);
    ``None`` opens the notes read-only (listing and rendering need no model;
    writes are refused). ``model`` names the author model recorded on writes. ``create=True`` makes
    the namespace if it is new; otherwise an unknown namespace is an error.
    """

    def __init__(
        self,
        store: Store,
        namespace: str,
        budget_tokens: int,
        count_tokens: TokenCounter | None,
        *,
        model: str = "",
        max_note_tokens: int = 512,
        max_note_chars: int = 8000,
        near_duplicate_threshold: float = 0.8,
        on_over_budget: Callable[[Notes, OverBudget], None] | None = None,
        create: bool = False,
    ) -> None:
        if budget_tokens <= 0:
            raise ConfigError(f"budget_tokens must be positive, got {budget_tokens}")
        validate_namespace(namespace)
        if create:
            store.create_namespace(namespace)
        else:
            store.require_namespace(namespace)
        self.store = store
        self.namespace = namespace
        self.budget_tokens = budget_tokens
        self._count_tokens = count_tokens
        self.model = model
        self.max_note_tokens = max_note_tokens
        self.max_note_chars = max_note_chars
        self.near_duplicate_threshold = near_duplicate_threshold
        self.on_over_budget = on_over_budget

    @classmethod
    def for_llm(cls, store: Store, namespace: str, llm: object, *, task_reserve: int | None = None,
                model: str = "", **kwargs: object) -> Notes:
        """Notes budgeted and counted by ``llm`` (``.count_tokens``, ``.context_window``)."""
        return cls(store, namespace, budget_for(llm, task_reserve), llm.count_tokens,  # type: ignore[attr-defined]
                   model=model or str(getattr(llm, "name", "") or ""), **kwargs)

    # -- reads ---------------------------------------------------------------
    def get(self, note_id: int) -> Note:
        with self.store.session(self.namespace) as tx:
            return self._get(tx, note_id)

    def list(self, status: str | None = "active", tag: str | None = None) -> list[Note]:
        """Notes in render order; ``status=None`` lists every status."""
        if status is not None and status not in ("active", "superseded", "deleted"):
            raise ValidationError(f"unknown status {status!r}", hint="use active, superseded or deleted")
        with self.store.session(self.namespace) as tx:
            notes = tx.notes(status)
        return [n for n in notes if tag is None or tag in n.tags]

    def history(self, note_id: int | None = None) -> list[NoteChange]:
        """Every recorded change of one note (oldest first), or of the namespace."""
        with self.store.session(self.namespace) as tx:
            if note_id is not None:
                self._get(tx, note_id)
            return tx.events(note_id)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's tokenizer (not for read-only notes)."""
        if self._count_tokens is None:
            raise ConfigError(f"the notes of {self.namespace!r} were opened read-only",
                              hint="open them with the model's token counter to change them")
        return self._count_tokens(text)

    def _block(self) -> str:
        with self.store.session(self.namespace) as tx:
            return render_notes(tx.active_texts())

    def render(self) -> str:
        """The block the model reads: active notes, deterministic order.

        A block over the budget (the budget was lowered after the notes were
        written) is still rendered whole, never cut, but not silently: a
        ``BudgetWarning`` says by how much (read-only notes are not counted)."""
        block = self._block()
        if block and self._count_tokens is not None:
            tokens = self._count_tokens(block)
            if tokens > self.budget_tokens:
                warnings.warn(BudgetWarning(
                    f"the notes block of {self.namespace!r} is {tokens} tokens, over its budget of "
                    f"{self.budget_tokens}: consolidate, delete or shorten notes"), stacklevel=2)
        return block

    def tokens(self) -> int:
        """Size of the rendered block in the model's tokens."""
        return self.count_tokens(self._block())

    # -- writes --------------------------------------------------------------
    def add(self, text: str, *, tags: Sequence[str] = (), session: str = "", task: str = "",
            model: str | None = None) -> AddResult:
        """Add a note unless an active note already says the same (exact after
        :func:`normalize`, or near: :func:`is_near_duplicate`); then the
        existing note is returned and the attempt is recorded in its history."""
        text, tokens = self._check_text(text)
        tags = check_tags(tags)
        author = self.model if model is None else model
        self._check_provenance(author=author, session=session, task=task)

        def write(tx: Tx) -> AddResult:
            active = tx.active_texts()
            key = normalize(text)
            best: tuple[float, int | None, str | None] = (0.0, None, None)
            for note_id, other in active:
                if normalize(other) == key:
                    best = (1.0, note_id, "exact")
                    break
                near, sim = is_near_duplicate(text, other, self.near_duplicate_threshold)
                if near and sim > best[0]:
                    best = (sim, note_id, "near")
            sim, existing, kind = best
            now = time.time()
            if existing is not None:
                tx.event_insert(NoteEvent(existing, "duplicate", now, new_text=text, model=author,
                                          session=session, task=task,
                                          block_tokens=self.count_tokens(render_notes(active))))
                return AddResult(self._get(tx, existing), False, kind, sim)
            row = NoteRow(0, self.namespace, text, "active", now, now, author, session, task,
                          list(tags), tokens)
            row.id = tx.note_insert(row)
            after = self._fit(tx, "add", active, active + [(row.id, text)])
            tx.event_insert(NoteEvent(row.id, "add", now, new_text=text, model=author,
                                      session=session, task=task, block_tokens=after))
            return AddResult(row, True)

        return self._write("add", write)

    def edit(self, note_id: int, old: str, new: str, *, session: str = "", task: str = "",
             model: str | None = None) -> Note:
        """Replace ``old`` (which must occur exactly once in the note) by ``new``."""
        if not old:
            raise ValidationError("the text to replace is empty", hint="quote the exact words to change")
        author = self.model if model is None else model
        self._check_provenance(author=author, session=session, task=task)

        def write(tx: Tx) -> Note:
            note = self._get(tx, note_id, need_active=True)
            count = note.text.count(old)
            if count != 1:
                raise ValidationError(
                    f"note {note_id}: the text to replace occurs {count} times, not once",
                    hint="quote more of the note so the text occurs exactly once"
                    if count else "copy the exact words of the note",
                )
            text, tokens = self._check_text(note.text.replace(old, new, 1))
            active = tx.active_texts()
            before_text = note.text
            note.text, note.tokens, note.updated = text, tokens, time.time()
            tx.note_update(note)
            after = self._fit(tx, "edit", active, [(i, text if i == note.id else t) for i, t in active])
            tx.event_insert(NoteEvent(note.id, "edit", note.updated, old_text=before_text, new_text=text,
                                      model=author, session=session, task=task, block_tokens=after))
            return note

        return self._write("edit", write)

    def supersede(self, old_ids: int | Sequence[int], text: str, *, tags: Sequence[str] | None = None,
                  session: str = "", task: str = "", model: str | None = None) -> Note:
        """A new note replaces one or more active notes (a merge, a correction).
        The old notes stay, marked superseded, each linked to the new one."""
        ids = [old_ids] if isinstance(old_ids, int) else list(dict.fromkeys(old_ids))
        if not ids:
            raise ValidationError("supersede needs at least one note to replace")
        text, tokens = self._check_text(text)
        author = self.model if model is None else model
        self._check_provenance(author=author, session=session, task=task)

        def write(tx: Tx) -> Note:
            olds = [self._get(tx, i, need_active=True) for i in ids]
            merged_tags = list(dict.fromkeys(t for o in olds for t in o.tags))
            new_tags = check_tags(tags) if tags is not None else merged_tags
            active = tx.active_texts()
            now = time.time()
            row = NoteRow(0, self.namespace, text, "active", now, now, author, session, task,
                          list(new_tags), tokens)
            row.id = tx.note_insert(row)
            for o in olds:
                o.status, o.superseded_by, o.updated = "superseded", row.id, now
                tx.note_update(o)
            kept = [(i, t) for i, t in active if i not in ids] + [(row.id, text)]
            after = self._fit(tx, "supersede", active, kept)
            tx.event_insert(NoteEvent(row.id, "supersede", now, new_text=text, model=author,
                                      session=session, task=task, block_tokens=after,
                                      related_id=ids[0]))
            for o in olds:
                tx.event_insert(NoteEvent(o.id, "superseded", now, old_text=o.text, model=author,
                                          session=session, task=task, block_tokens=after,
                                          related_id=row.id))
            return row

        return self._write("supersede", write)

    def delete(self, note_id: int, *, reason: str = "", session: str = "", task: str = "",
               model: str | None = None) -> Note:
        """Soft delete: the note leaves the block; it and its history stay until ``purge``."""
        author = self.model if model is None else model
        self._check_provenance(author=author, session=session, task=task, reason=reason)

        def write(tx: Tx) -> Note:
            note = self._get(tx, note_id, need_active=True)
            note.status, note.updated = "deleted", time.time()
            tx.note_update(note)
            after = self.count_tokens(render_notes(tx.active_texts()))
            tx.event_insert(NoteEvent(note.id, "delete", note.updated, old_text=note.text,
                                      new_text=reason, model=author, session=session, task=task,
                                      block_tokens=after))
            return note

        return self._write("delete", write)

    def restore(self, note_id: int, *, session: str = "", task: str = "",
                model: str | None = None) -> Note:
        """Bring a deleted or superseded note back into the block (budget permitting)."""
        author = self.model if model is None else model
        self._check_provenance(author=author, session=session, task=task)

        def write(tx: Tx) -> Note:
            note = self._get(tx, note_id)
            if note.status == "active":
                raise ValidationError(f"note {note_id} is already active")
            active = tx.active_texts()
            note.status, note.superseded_by, note.updated = "active", None, time.time()
            tx.note_update(note)
            after = self._fit(tx, "restore", active, tx.active_texts())
            tx.event_insert(NoteEvent(note.id, "restore", note.updated, new_text=note.text,
                                      model=author, session=session, task=task, block_tokens=after))
            return note

        return self._write("restore", write)

    def purge(self, note_id: int) -> None:
        """Real deletion of a deleted or superseded note and its history. Irreversible."""
        with self.store.session(self.namespace, write=True) as tx:
            note = self._get(tx, note_id)
            if note.status == "active":
                raise ValidationError(f"note {note_id} is active; only deleted or superseded notes are purged",
                                      hint=f"delete note {note_id} first")
            tx.note_purge(note_id)

    # -- usage over time -----------------------------------------------------
    def stats(self, *, window_days: float = 30.0, now: float | None = None) -> NotesStats:
        """Tokens used and free, and growth per day over the last ``window_days``
        of recorded history (each event stores the block's size after it), so
        ``days_left`` is the seed's "50 days" estimate for this namespace."""
        now = time.time() if now is None else now
        with self.store.session(self.namespace) as tx:
            active = tx.active_texts()
            events = tx.events()
        used = self.count_tokens(render_notes(active))
        start = now - window_days * 86400
        baseline, first_in_window = 0, None
        for e in events:
            if e.at < start:
                baseline = e.block_tokens
            elif first_in_window is None:
                first_in_window = e.at
        growth, span = 0.0, 1.0
        if events:
            latest = events[-1].block_tokens
            origin = start if events[0].at < start else events[0].at
            # Less than a day of history is read as one day: no extrapolating minutes.
            span = max((now - origin) / 86400, 1.0)
            growth = (latest - baseline) / span
        free = self.budget_tokens - used
        days_left = (max(free, 0) / growth) if growth > 0 else None
        return NotesStats(self.namespace, len(active), used, self.budget_tokens, free, growth,
                          days_left, span, events[0].at if events else None)

    def export_agents_md(self, path: str | Path) -> Path:
        """Write the notes block as an AGENTS.md file (atomically)."""
        block = self.render() or f"{NOTES_HEADER}\n(no notes yet)\n"
        text = (
            "# AGENTS.md\n\n"
            f"Notes kept by lifelong for namespace `{self.namespace}`: what earlier tasks learned\n"
            "that a fresh instance would not know. Generated by `lifelong notes export --agents-md`;\n"
            "change the notes with `lifelong notes …`, not this file.\n\n" + block
        )
        path = Path(path)
        atomic_write_text(path, text)
        return path

    # -- internals -----------------------------------------------------------
    def _get(self, tx: Tx, note_id: int, *, need_active: bool = False) -> Note:
        if isinstance(note_id, bool) or not isinstance(note_id, int):
            raise ValidationError(f"a note id must be a whole number, got {note_id!r}")
        # An id no store can hold (≤ 0, ≥ 2^63) names no note; never hand it to a driver.
        note = tx.note_get(note_id) if 1 <= note_id <= MAX_ID else None
        if note is None:
            raise NotFoundError(f"no note {note_id} in namespace {self.namespace!r}",
                                hint="list every note, deleted and superseded ones included")
        if need_active and note.status != "active":
            extra = f" by note {note.superseded_by}" if note.superseded_by else ""
            raise ValidationError(f"note {note_id} is {note.status}{extra}; only active notes change",
                                  hint=f"restore it first, or change note {note.superseded_by}"
                                  if note.superseded_by else "restore it first")
        return note

    def _check_text(self, text: str) -> tuple[str, int]:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("a note cannot be empty", hint="write what a fresh instance would not know")
        check_storable(text, "the note")
        text = text.strip()
        if len(text) > self.max_note_chars:
            raise ValidationError(
                f"note is {len(text)} characters; the limit is {self.max_note_chars}",
                hint="keep notes short; put detail in documentation",
            )
        tokens = self.count_tokens(text)
        if tokens > self.max_note_tokens:
            raise ValidationError(
                f"note is {tokens} tokens; the limit is {self.max_note_tokens}",
                hint="keep notes short; put detail in documentation",
            )
        return text, tokens

    @staticmethod
    def _check_provenance(**values: str) -> None:
        for name, value in values.items():
            check_storable(value, name)

    def _fit(self, tx: Tx, op: str, before: list[tuple[int, str]], after: list[tuple[int, str]]) -> int:
        """Tokens of the block after a write; refuse a write that grows it past the budget.
        (A write that shrinks an already-too-large block, e.g. after the budget
        was lowered, is always allowed.)"""
        after_tokens = self.count_tokens(render_notes(after))
        if after_tokens > self.budget_tokens:
            before_tokens = self.count_tokens(render_notes(before))
            if after_tokens > before_tokens:
                raise _Refused(OverBudget(self.namespace, op, self.budget_tokens, before_tokens,
                                          after_tokens))
        return after_tokens

    def _write(self, op: str, fn: Callable[[Tx], object]):
        # One transaction per write. Over budget: roll back, let the hook make
        # room (outside the transaction: it writes too), then try once more.
        for attempt in range(2):
            try:
                with self.store.session(self.namespace, write=True) as tx:
                    return fn(tx)
            except _Refused as refused:
                info = refused.info
                if self.on_over_budget is None or attempt == 1:
                    raise BudgetExceededError(
                        f"{op} refused: the notes block of {info.namespace!r} would grow to "
                        f"{info.tokens_after} tokens, over its budget of {info.budget_tokens} "
                        f"(now {info.tokens_before})"
                        + (" even after on_over_budget ran" if attempt == 1 else ""),
                        hint="consolidate the notes, delete or shorten notes, "
                        "or move detail into documentation",
                    ) from None
                self.on_over_budget(self, info)
        raise AssertionError("unreachable")
