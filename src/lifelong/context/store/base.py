"""The storage interface: what notes and docs need, whatever holds the rows.

A store is opened once; all access goes through ``store.session(namespace)``,
which yields a :class:`Tx` bound to ONE namespace. Every query a ``Tx`` runs
carries that namespace in its ``WHERE`` clause, so code holding a ``Tx`` for
namespace A has no way to name a row of namespace B: isolation lives in the
store, not in the callers' discipline.

A write session is one transaction that also serialises writers of the same
namespace (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a row lock on the
namespace). That is what makes read-check-write operations such as "add unless
the block would exceed its budget" or "edit if the text is still there" safe
when several processes write at once.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from lifelong.errors import NotFoundError, ValidationError
from lifelong.redact import redact_url

NOTE_STATUSES = ("active", "superseded", "deleted")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_namespace(name: str) -> str:
    """Namespaces name tenants/agents and double as folder names, so keep them plain."""
    if not isinstance(name, str) or not _NAMESPACE_RE.fullmatch(name) or name in (".", ".."):
        raise ValidationError(
            f"invalid namespace {name!r}",
            hint="use 1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit",
        )
    return name


MAX_ID = 2**63 - 1  # ids are 64-bit signed integers on both backends


def check_storable(text: str, what: str) -> str:
    """``text`` if both backends store it as it is, else a ValidationError: no NUL
    (PostgreSQL refuses it, SQLite would keep it) and nothing that is not UTF-8
    (a lone surrogate, e.g. from a file name or argv that was not UTF-8)."""
    if not isinstance(text, str):
        raise ValidationError(f"{what} must be text, got {type(text).__name__}")
    if "\x00" in text:
        raise ValidationError(f"{what} contains a NUL character (\\x00)",
                              hint="remove the NUL bytes; stored text cannot hold them")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid UTF-8 (an undecodable byte at character {exc.start})",
                              hint="convert it to UTF-8 first (e.g. iconv -t UTF-8)") from None
    return text


def check_id(value: object, what: str = "note") -> int:
    """A row id as the stores hold them (1 … 2^63 − 1), else NotFoundError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} id must be an integer, got {value!r}")
    if not 1 <= value <= MAX_ID:
        raise NotFoundError(f"no {what} {value}", hint=f"{what} ids are whole numbers from 1")
    return value


@dataclass
class NoteRow:
    """One note as stored. ``id`` is 0 until the store assigns one."""

    id: int
    namespace: str
    text: str
    status: str = "active"
    created: float = 0.0  # unix seconds
    updated: float = 0.0
    model: str = ""  # author model
    session: str = ""  # source session
    task: str = ""  # source task
    tags: list[str] = field(default_factory=list)
    tokens: int = 0  # by the tokenizer of the model that wrote it
    superseded_by: int | None = None


@dataclass
class NoteEvent:
    """One entry of a note's history. ``block_tokens`` is the rendered notes
    block's size right after the event: the series usage statistics read."""

    note_id: int
    kind: str  # add | edit | supersede | superseded | delete | duplicate
    at: float
    old_text: str = ""
    new_text: str = ""
    model: str = ""
    session: str = ""
    task: str = ""
    block_tokens: int = 0
    related_id: int | None = None  # the other note of a supersede or duplicate
    id: int = 0


@dataclass
class DocRow:
    """A document as indexed: the file on disk is the truth, this is its index entry."""

    path: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    body: str = ""
    mtime_ns: int = 0
    size: int = 0
    sha256: str = ""
    error: str = ""  # why the front matter could not be read, if it could not


@dataclass
class DocVersion:
    """A document's content as it was before a change replaced it.

    ``data`` is the file's exact bytes; ``text`` is them as text (with U+FFFD
    for bytes that are not UTF-8, in a file a person saved in another encoding)."""

    id: int
    path: str
    at: float  # when it was replaced
    change: str  # the change that replaced it: write | append | str_replace | restore
    text: str
    model: str = ""
    session: str = ""
    task: str = ""
    data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not self.data:
            self.data = self.text.encode("utf-8")

    def is_text(self) -> bool:
        """Whether ``text`` is the content exactly (the bytes are UTF-8)."""
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


@dataclass
class SearchHit:
    path: str
    description: str
    score: float  # higher is better
    snippet: str


class Tx(ABC):
    """Everything a caller may do inside one namespace, in one transaction."""

    namespace: str

    # -- notes ---------------------------------------------------------------
    @abstractmethod
    def note_get(self, note_id: int) -> NoteRow | None: ...

    @abstractmethod
    def notes(self, status: str | None = "active") -> list[NoteRow]:
        """Notes in (created, id) order; ``status=None`` means all."""

    @abstractmethod
    def active_texts(self) -> list[tuple[int, str]]:
        """(id, text) of active notes in (created, id) order: all a render needs."""

    @abstractmethod
    def note_insert(self, row: NoteRow) -> int: ...

    @abstractmethod
    def note_update(self, row: NoteRow) -> None:
        """Write text, status, tags, tokens, updated and superseded_by of ``row.id``."""

    @abstractmethod
    def note_purge(self, note_id: int) -> None:
        """Real deletion of the note and its history."""

    @abstractmethod
    def event_insert(self, event: NoteEvent) -> int: ...

    @abstractmethod
    def events(self, note_id: int | None = None) -> list[NoteEvent]:
        """History in (at, id) order, of one note or of the whole namespace."""

    # -- documentation index -------------------------------------------------
    @abstractmethod
    def doc_get(self, path: str) -> DocRow | None: ...

    @abstractmethod
    def doc_list(self) -> list[DocRow]:
        """Every indexed document by path, without bodies."""

    @abstractmethod
    def doc_stamps(self) -> dict[str, tuple[int, int, str]]:
        """path -> (mtime_ns, size, sha256) of every indexed document."""

    @abstractmethod
    def doc_upsert(self, row: DocRow) -> None: ...

    @abstractmethod
    def doc_delete(self, path: str) -> None: ...

    @abstractmethod
    def doc_version_insert(self, v: DocVersion) -> int: ...

    @abstractmethod
    def doc_versions(self, path: str) -> list[DocVersion]:
        """Earlier contents of one document, oldest first."""

    @abstractmethod
    def doc_search(self, terms: list[str], limit: int) -> list[SearchHit]:
        """Documents matching any of ``terms`` (plain words), best first."""


class Store(ABC):
    """A place notes and the docs index live. Open with :func:`open_store`."""

    url: str

    @abstractmethod
    def namespaces(self) -> list[str]: ...

    @abstractmethod
    def create_namespace(self, name: str) -> None:
        """Create ``name`` if it does not exist (idempotent)."""

    @abstractmethod
    def has_namespace(self, name: str) -> bool: ...

    @abstractmethod
    def session(self, namespace: str, write: bool = False) -> AbstractContextManager[Tx]:
        """A transaction scoped to ``namespace``; commits on clean exit, rolls back on error."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def optimize(self) -> None:
        """Refresh planner statistics and compact the search index; worth
        calling after a bulk load (a running PostgreSQL also does this itself)."""

    @abstractmethod
    def close(self) -> None: ...

    def require_namespace(self, name: str) -> str:
        validate_namespace(name)
        if not self.has_namespace(name):
            known = ", ".join(self.namespaces()) or "none yet"
            raise NotFoundError(
                f"unknown namespace {name!r} in {self.redacted_url()} (known: {known})",
                hint="check --namespace, or create it by adding a first note/doc to it",
            )
        return name

    def redacted_url(self) -> str:
        # Never echo a password into an error message or a log.
        return redact_url(self.url)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
