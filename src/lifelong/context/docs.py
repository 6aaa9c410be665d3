"""Documentation: verbose Markdown files on disk that a model reads on demand.

One file per topic in a workspace folder per namespace, each with YAML front
matter (``description``, ``tags``, ``provenance``) so a person can open, edit
and diff them. The files are the truth; the store holds a search index of
them, refreshed whenever a file's size, mtime or hash changes, so edits made
by hand are picked up.

Tools, with few sharp verbs: ``tree``, ``search``, ``read`` (a page of at most
N tokens from an offset), ``write``, ``append``, ``str_replace``. Nothing is
lost: every change keeps the content it replaced in the store (``history``,
``restore``). Every path is
confined to the namespace's folder: ``..``, absolute paths and symlinks that
leave it are refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from lifelong.atomic import atomic_write_bytes
from lifelong.context.store.base import (
    DocRow,
    DocVersion,
    SearchHit,
    Store,
    check_storable,
    validate_namespace,
)
from lifelong.context.tags import check_tags, is_tag
from lifelong.errors import ConfigError, NotFoundError, StoreError, ValidationError

if TYPE_CHECKING:
    from lifelong.context.embeddings import SemanticIndex

TokenCounter = Callable[[str], int]
_FRONT = "---\n"
# Limits on document paths, well inside every filesystem's (255-byte names, 4 KiB paths).
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_DEPTH = 32
# Characters no document name may hold: control characters (a newline would
# inject a line into the index a model reads), invisible format characters
# (bidirectional overrides make a name look like another) and line separators.
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def page_end(text: str, offset: int, max_tokens: int, count_tokens: Callable[[str], int]) -> int:
    """Where a page of at most ``max_tokens`` tokens of ``text`` from ``offset`` ends:
    at a line (or word) boundary when one is in the page's second half. The one
    pager of documents and of a task's files."""
    n = len(text)
    if offset == n:
        return n
    # Tokens are short: look no further than 32 characters a token, so a
    # page of a huge file never tokenizes the whole rest of it.
    hi = min(n, offset + 32 * max_tokens)
    if count_tokens(text[offset:hi]) <= max_tokens:
        if hi == n:
            return n
        lo = hi
    else:
        # Largest end with count(text[offset:end]) <= max_tokens (counts grow with end).
        lo, hi = offset, hi - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(text[offset:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        if lo == offset:
            raise ValidationError(f"max_tokens={max_tokens} is too small to read anything at offset {offset}")
    # Prefer to stop after a newline, else after whitespace, in the page's second half.
    half = offset + (lo - offset) // 2
    for sep in ("\n", " "):
        cut = text.rfind(sep, half, lo)
        if cut >= 0:
            return cut + 1
    return lo


def _shown(path: str, limit: int = 80) -> str:
    """A path as messages quote it: repr (escapes newlines and undecodable bytes), cut short."""
    return repr(path) if len(path) <= limit else repr(path[: limit - 1]) + "…"


def doc_path(path: str) -> PurePosixPath:
    """The canonical form of a document path -- NFC, '.md' added -- or a
    ValidationError that says why it names no document. Looks at no file."""
    if not isinstance(path, str) or not path.strip():
        raise ValidationError("empty document path", hint="e.g. deploy/aws.md")
    if "\\" in path or "\x00" in path:
        raise ValidationError(f"invalid characters in document path {_shown(path)}",
                              hint="use '/' between folders")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"document path {_shown(path)} is not valid UTF-8",
                              hint="name documents in UTF-8 (a name from another encoding?)") from None
    if any(unicodedata.category(ch) in _BAD_NAME_CATEGORIES for ch in path):
        raise ValidationError(f"invalid characters in document path {_shown(path)}: control or "
                              "invisible characters (a newline, say) are not allowed",
                              hint="use letters, digits, spaces and punctuation")
    # One spelling per name: 'é' typed precomposed (NFC) or as e + accent (NFD)
    # looks the same to a reader, so it must be the same document.
    path = unicodedata.normalize("NFC", path.strip())
    p = PurePosixPath(path)
    if p.is_absolute() or path.startswith("~"):
        raise ValidationError(f"absolute path {_shown(path)} refused: paths are relative to the workspace",
                              hint="e.g. deploy/aws.md")
    if ".." in p.parts:
        raise ValidationError(f"path {_shown(path)} refused: '..' would leave the workspace",
                              hint="name documents relative to the workspace, without '..'")
    if any(part.startswith(".") for part in p.parts):
        raise ValidationError(f"path {_shown(path)} refused: hidden names (starting with '.') are not documents")
    if not p.parts:
        raise ValidationError(f"path {_shown(path)} names a folder, not a document", hint="e.g. deploy/aws.md")
    if p.suffix == "":
        p = p.with_suffix(".md")
    if p.suffix != ".md":
        raise ValidationError(f"{_shown(path)} is not a Markdown document", hint="use a .md path")
    if len(p.parts) > MAX_DEPTH:
        raise ValidationError(f"path {_shown(path)} is {len(p.parts)} levels deep; the limit is {MAX_DEPTH}",
                              hint="use fewer nested folders")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in p.parts):
        raise ValidationError(f"a name in path {_shown(path)} is longer than {MAX_NAME_BYTES} bytes",
                              hint="use shorter names")
    if len(p.as_posix().encode()) > MAX_PATH_BYTES:
        raise ValidationError(f"path {_shown(path)} is longer than {MAX_PATH_BYTES} bytes",
                              hint="use a shorter path")
    return p


# A plain ASCII path is its own canonical form; checking it by pattern keeps a
# scan of thousands of files cheap. Anything else goes through doc_path.
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9_][\w ,+@()=-]*(?:\.[\w ,+@()=-]+)*/)*"
                         r"[A-Za-z0-9_][\w ,+@()=-]*(?:\.[\w ,+@()=-]+)*\.md", re.ASCII)


def _canonical(rel: str) -> str | None:
    """The canonical path of a file found on disk, or None if its name is no document path."""
    if len(rel) <= MAX_NAME_BYTES and rel.count("/") < MAX_DEPTH and _PLAIN_PATH.fullmatch(rel):
        return rel
    try:
        return doc_path(rel).as_posix()
    except ValidationError:
        return None


def default_docs_root() -> Path:
    """``LIFELONG_DOCS``, else ``<data dir>/docs``; each namespace is a folder in it."""
    from lifelong.paths import data_dir

    return Path(os.environ.get("LIFELONG_DOCS") or data_dir() / "docs")


# -- front matter ----------------------------------------------------------------------------


def parse_document(text: str) -> tuple[dict, str]:
    """Split a document into (front matter, body); a clear error if the front matter is bad."""
    if not text.startswith(_FRONT):
        return {}, text
    end = text.find("\n---\n", len(_FRONT) - 1)
    if end < 0:
        if text.endswith("\n---"):
            end = len(text) - 4
        else:
            raise ValidationError("front matter opened with '---' is never closed",
                                  hint="end the YAML header with a line '---'")
    header, body = text[len(_FRONT):end + 1], text[end + 5:]
    try:
        meta = yaml.safe_load(header)
    except yaml.YAMLError as exc:
        raise ValidationError(f"front matter is not valid YAML: {exc}",
                              hint="fix the YAML between the '---' lines") from None
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise ValidationError("front matter must be a YAML mapping (key: value lines)")
    if not isinstance(meta.get("description", ""), str):
        raise ValidationError("front matter 'description' must be a string")
    tags = meta.get("tags", [])
    if not isinstance(tags, list) or not all(is_tag(t) for t in tags):
        raise ValidationError("front matter 'tags' must be a list of short words",
                              hint="e.g. tags: [deploy, aws]")
    if not isinstance(meta.get("provenance", {}), dict):
        raise ValidationError("front matter 'provenance' must be a mapping")
    return meta, body.removeprefix("\n")


def compose_document(meta: dict, body: str) -> str:
    # Known keys first, in a fixed order, so diffs of front matter stay small.
    known = ("description", "tags", "provenance")
    meta = {k: meta[k] for k in known if k in meta} | {k: v for k, v in meta.items() if k not in known}
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"{_FRONT}{header}---\n\n{body}"


def _default_description(body: str) -> str:
    for line in body.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return ""


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocInfo:
    path: str
    description: str
    tags: tuple[str, ...]
    size: int  # bytes
    error: str = ""  # non-empty when the file's front matter is invalid


@dataclass(frozen=True)
class Page:
    """A page of a document: ``text`` is ``content[offset:next_offset]``."""

    path: str
    text: str
    offset: int  # characters
    next_offset: int
    more: bool  # whether text remains after next_offset
    total_chars: int
    tokens: int


# -- the documentation of one namespace ------------------------------------------------------


class Docs:
    """The documents of one namespace, in ``root / namespace``."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        root: str | Path,
        count_tokens: TokenCounter,
        *,
        model: str = "",
        create: bool = False,
        rescan_interval_s: float = 0.0,
        max_doc_chars: int = 2_000_000,
    ) -> None:
        validate_namespace(namespace)
        if create:
            store.create_namespace(namespace)
        else:
            store.require_namespace(namespace)
        self.store = store
        self.namespace = namespace
        self.folder = Path(root) / namespace
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.folder} as the docs folder: {exc.strerror or exc}",
                              hint="point --workspace (LIFELONG_DOCS) at a writable folder") from None
        self.count_tokens = count_tokens
        self.model = model
        # 0: look at the files before every tree/search. A long-running session
        # with thousands of docs may rescan less often (its own writes are
        # indexed as they happen; this only bounds how late hand edits show up).
        self.rescan_interval_s = rescan_interval_s
        self.max_doc_chars = max_doc_chars
        self._last_scan = float("-inf")
        self.unindexed: list[str] = []  # files the last scan left out: names that are no doc path
        self._keys: dict[str, str | None] = {}  # name on disk -> canonical path (None: not a doc path)
        self._semantic: SemanticIndex | None = None  # built by the first semantic_search

    # -- paths ---------------------------------------------------------------
    def resolve(self, path: str) -> tuple[str, Path]:
        """(canonical relative path, real file path), or ValidationError if the
        path is not a Markdown file inside this namespace's folder."""
        p = doc_path(path)
        root = self.folder.resolve()
        try:
            real = self._on_disk(p).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
            raise ValidationError(f"path {_shown(path)} cannot be followed: {exc.strerror or exc}",
                                  hint="check the folders and symlinks on the way") from None
        if not real.is_relative_to(root):
            raise ValidationError(f"path {_shown(path)} refused: a symlink leads outside the workspace",
                                  hint="documents must live inside the namespace's folder")
        return p.as_posix(), real

    def _on_disk(self, p: PurePosixPath) -> Path:
        """The file a canonical path names: itself, or, where a person made a name in
        another Unicode spelling (NFD, say), that file -- never a look-alike twin."""
        here = self.folder
        for part in p.parts:
            nxt = here / part
            if not os.path.lexists(nxt) and here.is_dir():
                for name in os.listdir(here):
                    if name != part and unicodedata.normalize("NFC", name) == part:
                        nxt = here / name
                        break
            here = nxt
        return here

    # -- reads ---------------------------------------------------------------
    def tree(self) -> list[DocInfo]:
        """Every document, by path."""
        self._maybe_sync()
        with self.store.session(self.namespace) as tx:
            rows = tx.doc_list()
        return [DocInfo(r.path, r.description, tuple(r.tags), r.size, r.error) for r in rows]

    def tree_text(self) -> str:
        """A compact index for a prompt: one line per document."""
        # One line per document, whatever a description holds (a newline would
        # put a line of its own into the prompt).
        lines = [f"- {d.path}: {' '.join(d.description.split())}" if d.description.strip()
                 else f"- {d.path}" for d in self.tree()]
        return "\n".join(lines)

    def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        """Full-text search (any of the query's words), best first."""
        terms = list(dict.fromkeys(re.findall(r"\w+", query.casefold())))[:32]
        if not terms:
            raise ValidationError("empty search query", hint="give one or more words")
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        self._maybe_sync()
        with self.store.session(self.namespace) as tx:
            return tx.doc_search(terms, limit)

    def semantic_search(self, query: str, limit: int = 10) -> list[SearchHit]:
        """Search by meaning, not words (needs ``pip install 'lifelong[embeddings]'``):
        cosine similarity of sentence embeddings, best first, one hit per document.
        Only new or changed documents are embedded; vectors are cached by content."""
        if not query.strip():
            raise ValidationError("empty search query", hint="describe what you are looking for")
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        if self._semantic is None:
            from lifelong.context.embeddings import SemanticIndex

            self._semantic = SemanticIndex()
        self._maybe_sync()
        with self.store.session(self.namespace) as tx:
            rows = tx.doc_list()
            missing = set(self._semantic.missing(rows))
            bodies = [row for row in (tx.doc_get(p) for p in sorted(missing)) if row is not None]
        self._semantic.add(bodies)
        return self._semantic.search(query, rows, limit)

    def read(self, path: str, offset: int = 0, max_tokens: int = 1024) -> Page:
        """At most ``max_tokens`` tokens of the document from character ``offset``,
        cut at a line (or word) boundary when one is near; ``next_offset`` continues."""
        rel, real = self.resolve(path)
        # A file that is not UTF-8 reads with U+FFFD for the bad bytes; changing
        # it is refused (append, str_replace), so nothing is rewritten by accident.
        text = self._load(rel, real).decode("utf-8", errors="replace")
        if not 0 <= offset <= len(text):
            raise ValidationError(f"offset {offset} is outside {rel} ({len(text)} characters)")
        if max_tokens < 1:
            raise ValidationError(f"max_tokens must be at least 1, got {max_tokens}")
        end = page_end(text, offset, max_tokens, self.count_tokens)
        chunk = text[offset:end]
        return Page(rel, chunk, offset, end, end < len(text), len(text),
                    self.count_tokens(chunk) if chunk else 0)

    def exists(self, path: str) -> bool:
        return self.resolve(path)[1].is_file()

    # -- writes --------------------------------------------------------------
    def write(self, path: str, text: str, *, description: str | None = None,
              tags: Sequence[str] | None = None, session: str = "", task: str = "",
              model: str | None = None) -> DocInfo:
        """Create or overwrite a document. ``text`` is the body, or a whole file
        starting with front matter; ``description``/``tags`` override it. Without a
        description, the new body's first line is one (the old one described the old body)."""
        check_storable(text, "the document")
        if description is not None:
            check_storable(description, "the description")
        if tags is not None:
            tags = check_tags(tags)
        meta, body = parse_document(text)
        if tags is not None:
            meta["tags"] = list(tags)
        if description is not None:
            meta["description"] = description

        def change(old: dict | None, _body: str | None, _current: str) -> tuple[dict, str]:
            new = dict(meta)
            new.setdefault("description", _default_description(body))
            new.setdefault("tags", (old or {}).get("tags", []))
            prov = dict((old or {}).get("provenance") or {})
            prov.update(meta.get("provenance") or {})
            return new | {"provenance": prov}, body

        return self._change(path, change, session, task, model, create=True, op="write")

    def append(self, path: str, text: str, *, session: str = "", task: str = "",
               model: str | None = None) -> DocInfo:
        """Add ``text`` at the end of an existing document's body."""
        if not text:
            raise ValidationError("nothing to append")
        check_storable(text, "the text to append")

        def change(old: dict | None, body: str | None, _current: str) -> tuple[dict, str]:
            assert old is not None and body is not None
            sep = "" if not body or body.endswith("\n") else "\n"
            return old, body + sep + text

        return self._change(path, change, session, task, model, create=False, op="append")

    def str_replace(self, path: str, old: str, new: str, *, session: str = "", task: str = "",
                    model: str | None = None) -> DocInfo:
        """Replace ``old``, which must occur exactly once in the document, by ``new``."""
        if not old:
            raise ValidationError("the text to replace is empty", hint="quote the exact words to change")
        check_storable(new, "the replacement text")

        def change(_meta: dict | None, _body: str | None, current: str) -> tuple[dict, str]:
            # On the file as it is on disk, front matter included, so the text
            # a reader saw with `read` is the text that matches.
            count = current.count(old)
            if count != 1:
                raise ValidationError(
                    f"{path}: the text to replace occurs {count} times, not once",
                    hint="quote more context so it occurs exactly once" if count
                    else "copy the exact text from the document",
                )
            return parse_document(current.replace(old, new, 1))

        return self._change(path, change, session, task, model, create=False, op="str_replace")

    def history(self, path: str) -> list[DocVersion]:
        """Earlier contents of a document, oldest first: each is the whole file
        as it was before the change named in ``change`` replaced it."""
        rel, _ = self.resolve(path)
        with self.store.session(self.namespace) as tx:
            return tx.doc_versions(rel)

    def restore(self, path: str, version_id: int, *, session: str = "", task: str = "",
                model: str | None = None) -> DocInfo:
        """Put an earlier version back (the content it replaces becomes a version too).
        A version that is not UTF-8 text comes back byte for byte."""
        rel, _ = self.resolve(path)
        found = [v for v in self.history(rel) if v.id == version_id]
        if not found:
            raise NotFoundError(f"no version {version_id} of {rel!r}",
                                hint=f"list the versions of {rel} (docs history)")
        version = found[0]

        def change(_meta: dict | None, _body: str | None, _current: str) -> tuple[dict, str]:
            return parse_document(version.text)

        exact = None if version.is_text() else version.data
        return self._change(rel, change, session, task, model, create=True, op="restore", exact=exact)

    # -- index ---------------------------------------------------------------
    def sync(self) -> int:
        """Re-index files whose size, mtime or hash changed; drop vanished ones.
        Returns how many index entries changed. Files whose names are no valid
        document path (not UTF-8, a newline in them, …) are left out and listed
        in ``unindexed``."""
        on_disk = self._scan()
        with self.store.session(self.namespace) as tx:
            stamps = tx.doc_stamps()
        stale = [p for p, (_, st) in on_disk.items() if stamps.get(p, (None, None))[:2] != st]
        gone = [p for p in stamps if p not in on_disk]
        changed = 0
        if stale or gone:
            with self.store.session(self.namespace, write=True) as tx:
                for rel in gone:
                    tx.doc_delete(rel)
                    changed += 1
                for rel in stale:
                    real = self.folder / on_disk[rel][0]
                    try:
                        data = real.read_bytes()
                        st = real.stat()
                    except FileNotFoundError:  # removed since the scan
                        tx.doc_delete(rel)
                        continue
                    except OSError:  # unreadable now (permissions): the next scan tries again
                        continue
                    digest = hashlib.sha256(data).hexdigest()
                    old = stamps.get(rel)
                    row = tx.doc_get(rel) if old and old[2] == digest else None
                    if row is None:  # new or really changed: parse again
                        row = self._row(rel, data.decode("utf-8", errors="replace"), digest)
                        changed += 1
                    row.mtime_ns, row.size = st.st_mtime_ns, st.st_size
                    tx.doc_upsert(row)
        self._last_scan = time.monotonic()
        return changed

    # -- internals -----------------------------------------------------------
    def _maybe_sync(self) -> None:
        if time.monotonic() - self._last_scan >= self.rescan_interval_s:
            self.sync()

    def _scan(self) -> dict[str, tuple[str, tuple[int, int]]]:
        """canonical path -> (path on disk, (mtime_ns, size)) of every Markdown
        file; scandir keeps this to one stat per file, which matters with
        thousands of docs. Names that are no valid document path go to
        ``unindexed``; of two spellings of one name, the canonical (NFC) one wins."""
        root = self.folder.resolve()
        found: dict[str, tuple[str, tuple[int, int]]] = {}
        skipped: list[str] = []
        stack = [(str(root), "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:  # vanished, unreadable, or a path too long to open
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue  # hidden files, and the temp files of atomic writes
                rel = prefix + e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, rel + "/"))
                        continue
                    if not e.name.endswith(".md"):
                        continue
                    if e.is_symlink() and not Path(e.path).resolve().is_relative_to(root):
                        continue  # never index what lies outside the workspace
                    st = e.stat()
                except (OSError, RuntimeError):  # vanished since listed, a symlink loop
                    continue
                if rel not in self._keys:  # checked once per name: rescans stay one stat a file
                    self._keys[rel] = _canonical(rel)
                key = self._keys[rel]
                if key is None:
                    skipped.append(_shown(rel))
                    continue
                if key in found:  # two spellings of one name
                    if rel != key:
                        skipped.append(_shown(rel))
                        continue
                    skipped.append(_shown(found[key][0]))
                found[key] = (rel, (st.st_mtime_ns, st.st_size))
        self.unindexed = sorted(skipped)
        return found

    def _row(self, rel: str, text: str, digest: str) -> DocRow:
        try:
            meta, body = parse_document(text)
        except ValidationError as exc:  # a hand edit broke it: index raw text, show the error
            row = DocRow(rel, "", [], text, sha256=digest, error=exc.message)
        else:
            row = DocRow(rel, str(meta.get("description", "")), list(meta.get("tags", [])), body,
                         sha256=digest)
        # The index holds what both backends can store (PostgreSQL refuses NUL);
        # the file itself is untouched.
        row.description, row.body, row.error = (t.replace("\x00", "\ufffd")
                                                for t in (row.description, row.body, row.error))
        return row

    def _load(self, rel: str, real: Path) -> bytes:
        """The file's bytes, or a clear error for whatever stands in the way."""
        try:
            return real.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no document {rel!r} in namespace {self.namespace!r}",
                                hint="list the documents (docs tree) or search them (docs search)") from None
        except IsADirectoryError:
            raise ValidationError(f"{rel!r} is a folder, not a document",
                                  hint="name a .md file inside it, e.g. " + f"{rel}/index.md") from None
        except OSError as exc:
            raise StoreError(f"cannot read {rel!r}: {exc.strerror or exc}",
                             hint="check the file's permissions") from None

    def _check_writable(self, rel: str, real: Path) -> None:
        """A clear error before anything is written where no document can be:
        over a folder, or below a document used as a folder."""
        if real.is_dir():
            raise ValidationError(f"{rel!r} is a folder, not a document", hint="choose another name")
        root = self.folder.resolve()
        for parent in reversed(real.relative_to(root).parents):
            here = root / parent
            if here.exists() and not here.is_dir():
                raise ValidationError(f"{rel!r} refused: {parent.as_posix()!r} is a document, not a folder",
                                      hint="choose another name")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # One writer of this namespace's files at a time, across processes: a
        # read-modify-write (append, str_replace) must not interleave with another.
        with open(self.folder / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _change(self, path: str, change: Callable[[dict | None, str | None, str], tuple[dict, str]],
                session: str, task: str, model: str | None, *, create: bool, op: str,
                exact: bytes | None = None) -> DocInfo:
        """Read, ``change``, write back; the content replaced is kept as a version.
        ``exact``: write these bytes as they are (restoring a version that is not UTF-8)."""
        rel, real = self.resolve(path)
        self.store.require_namespace(self.namespace)
        author = self.model if model is None else model
        for what, value in (("the author", author), ("the session", session), ("the task", task)):
            check_storable(value, what)
        with self._locked():
            self._check_writable(rel, real)
            old_meta: dict | None = None
            old_body: str | None = None
            current: str | None = None
            current_bytes = self._load(rel, real) if real.is_file() else None
            if current_bytes is not None:
                try:
                    current = current_bytes.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if not create:  # never rewrite bytes we cannot read as they are
                        raise ValidationError(
                            f"{rel} is not UTF-8 text (byte 0x{current_bytes[exc.start]:02x} at "
                            f"offset {exc.start}); {op} would corrupt it",
                            hint="convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8), or overwrite "
                            "it (docs write): its bytes are kept as a version") from None
            if current is not None:
                try:
                    old_meta, old_body = parse_document(current)
                except ValidationError as exc:
                    if not create:
                        raise ValidationError(f"{rel}: {exc.message}",
                                              hint="fix its front matter by hand, or overwrite it "
                                              "(docs write)") from None
            elif current_bytes is None and not create:
                raise NotFoundError(f"no document {rel!r} in namespace {self.namespace!r}",
                                    hint="create it first (docs write)")
            if exact is not None:
                data = exact
                text = exact.decode("utf-8", errors="replace")
            else:
                text = self._compose(rel, change(old_meta, old_body, current or ""), old_meta, author,
                                     session, task)
                data = text.encode("utf-8")
            # Order matters for crashes: the old content is committed to the
            # store before the file is replaced, and the index follows the file
            # (a crash in between leaves a stale index entry that the next scan fixes).
            if current_bytes is not None:
                shown = current if current is not None else current_bytes.decode("utf-8", errors="replace")
                with self.store.session(self.namespace, write=True) as tx:
                    tx.doc_version_insert(DocVersion(0, rel, time.time(), op, shown, author, session, task,
                                                     data=current_bytes))
            try:
                atomic_write_bytes(real, data)
                st = real.stat()
            except OSError as exc:
                raise StoreError(f"cannot write {rel!r}: {exc.strerror or exc}",
                                 hint="check the workspace's permissions and free space; the document "
                                 "is unchanged") from None
            row = self._row(rel, text, hashlib.sha256(data).hexdigest())
            row.mtime_ns, row.size = st.st_mtime_ns, st.st_size
            with self.store.session(self.namespace, write=True) as tx:
                tx.doc_upsert(row)
        return DocInfo(rel, row.description, tuple(row.tags), row.size)

    def _compose(self, rel: str, changed: tuple[dict, str], old_meta: dict | None, author: str,
                 session: str, task: str) -> str:
        """The new file: the changed front matter with its provenance brought up to date."""
        meta, body = changed
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        prov = dict(meta.get("provenance") or {})
        if old_meta is None or not prov.get("created"):
            prov.setdefault("created", now)
            for key, value in (("model", author), ("session", session), ("task", task)):
                if value:
                    prov.setdefault(key, value)
        prov["updated"] = now
        if author and prov.get("model") != author:
            prov["updated_by"] = author
        text = compose_document(meta | {"provenance": prov}, body)
        parse_document(text)  # what we write must read back
        if len(text) > self.max_doc_chars:
            raise ValidationError(f"{rel} would be {len(text)} characters; the limit is {self.max_doc_chars}",
                                  hint="split it into several documents")
        return text
