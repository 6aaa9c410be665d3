"""Claude's memory tool, answered from a namespace's documentation.

Anthropic's API offers a client-side tool, ``{"type": "memory_20250818",
"name": "memory"}``: the model sends commands on files under ``/memories``
and the application carries them out. :class:`MemoryTool` carries them out on
:class:`~lifelong.context.docs.Docs`, so a Claude agent reads and writes the
same Markdown files, with the same history, search index and confinement, as
every other lifelong client::

    tool = MemoryTool(docs)
    for block in response.content:
        if block.type == "tool_use" and block.name == "memory":
            results.append(tool.tool_result(block.id, block.input))

Commands (the tool's schema): ``view`` (a folder's listing, or a file with
line numbers, optionally ``view_range``), ``create`` (``file_text``),
``str_replace`` (``old_str``, ``new_str``), ``insert`` (``insert_line``,
``insert_text``), ``delete``, ``rename`` (``old_path``, ``new_path``).
Documents are Markdown: a path without a suffix gets ``.md``. Nothing is
lost: each change keeps what it replaced (``lifelong docs history``).
"""

from __future__ import annotations

from typing import Any

from lifelong.context.docs import Docs
from lifelong.errors import LifelongError, NotFoundError, ValidationError

ROOT = "/memories"
TOOL = {"type": "memory_20250818", "name": "memory"}  # what to pass in the request's tools
_ARGS = {
    "view": ({"path"}, {"view_range"}),
    "create": ({"path", "file_text"}, set()),
    "str_replace": ({"path", "old_str", "new_str"}, set()),
    "insert": ({"path", "insert_line", "insert_text"}, set()),
    "delete": ({"path"}, set()),
    "rename": ({"old_path", "new_path"}, set()),
}


class MemoryTool:
    """The ``memory`` tool's commands on the documents of one namespace."""

    def __init__(self, docs: Docs, *, page_tokens: int = 100_000) -> None:
        self.docs = docs
        self.page_tokens = page_tokens

    def tool_result(self, tool_use_id: str, command: dict[str, Any]) -> dict[str, Any]:
        """The ``tool_result`` block answering one ``tool_use`` (errors with ``is_error``)."""
        try:
            return {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.run(command)}
        except LifelongError as exc:
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return {"type": "tool_result", "tool_use_id": tool_use_id, "content": f"Error: {text}",
                    "is_error": True}

    def run(self, command: dict[str, Any]) -> str:
        """Carry out one command; a :class:`LifelongError` says what was wrong."""
        if not isinstance(command, dict):
            raise ValidationError("a memory command is an object with a 'command' field")
        name = command.get("command")
        if name not in _ARGS:
            raise ValidationError(f"unknown memory command {name!r}",
                                  hint=f"use one of: {', '.join(_ARGS)}")
        required, optional = _ARGS[name]
        given = set(command) - {"command"}
        missing, unknown = required - given, given - required - optional
        if missing or unknown:
            parts = ([f"missing {', '.join(sorted(missing))}"] if missing else []) + \
                    ([f"unknown {', '.join(sorted(unknown))}"] if unknown else [])
            raise ValidationError(f"{name}: {'; '.join(parts)}",
                                  hint=f"{name} takes {', '.join(sorted(required | optional))}")
        return getattr(self, f"_{name}")(**{k: v for k, v in command.items() if k != "command"})

    # -- the commands ----------------------------------------------------------
    def _view(self, path: str, view_range: list[int] | None = None) -> str:
        rel = _relative(path)
        folder = self._folder(rel)
        if folder is not None:
            return self._listing(folder)
        page = self.docs.read(rel, 0, self.page_tokens)
        lines = page.text.splitlines()
        start, end = 1, len(lines)
        if view_range is not None:
            if (not isinstance(view_range, list | tuple) or len(view_range) != 2
                    or not all(isinstance(x, int) for x in view_range)):
                raise ValidationError("view_range is two line numbers, [first, last] (last -1: the end)")
            start, end = view_range[0], len(lines) if view_range[1] == -1 else view_range[1]
            if not 1 <= start <= max(end, 1) or end > len(lines):
                raise ValidationError(f"view_range {list(view_range)} is outside {page.path} "
                                      f"(lines 1-{len(lines)})")
        shown = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(start, end + 1))
        more = "" if not page.more else f"\n(the file goes on past {page.next_offset} characters)"
        return f"Here's the content of {ROOT}/{page.path} with line numbers:\n{shown}{more}"

    def _create(self, path: str, file_text: str) -> str:
        info = self.docs.write(_relative(path), file_text)
        return f"File created successfully at {ROOT}/{info.path}"

    def _str_replace(self, path: str, old_str: str, new_str: str) -> str:
        info = self.docs.str_replace(_relative(path), old_str, new_str)
        return f"The memory file {ROOT}/{info.path} has been edited."

    def _insert(self, path: str, insert_line: int, insert_text: str) -> str:
        info = self.docs.insert(_relative(path), insert_line, insert_text)
        return f"The memory file {ROOT}/{info.path} has been edited: text inserted after line {insert_line}."

    def _delete(self, path: str) -> str:
        rel = _relative(path)
        folder = self._folder(rel)
        if folder is None:
            info = self.docs.delete(rel)
            return f"Successfully deleted {ROOT}/{info.path}"
        inside = [d.path for d in self.docs.tree() if d.path.startswith(folder)]
        if not folder or not inside:
            raise ValidationError(f"{ROOT}/{rel} is the root or an empty folder; nothing deleted",
                                  hint="delete documents by their path")
        for doc in inside:
            self.docs.delete(doc)
        return f"Successfully deleted {ROOT}/{rel} ({len(inside)} documents)"

    def _rename(self, old_path: str, new_path: str) -> str:
        info = self.docs.rename(_relative(old_path), _relative(new_path))
        return f"Successfully renamed {ROOT}/{_relative(old_path)} to {ROOT}/{info.path}"

    # -- folders ---------------------------------------------------------------
    def _folder(self, rel: str) -> str | None:
        """The folder prefix ("" for the root, "a/b/" for a folder) if ``rel`` names a
        folder of documents, else None (a document)."""
        if rel == "":
            return ""
        prefix = rel.rstrip("/") + "/"
        if any(d.path.startswith(prefix) for d in self.docs.tree()):
            return prefix
        if rel.endswith("/"):
            raise NotFoundError(f"no folder {ROOT}/{rel}", hint=f"view {ROOT} to list what there is")
        return None

    def _listing(self, prefix: str) -> str:
        docs = [d for d in self.docs.tree() if d.path.startswith(prefix)]
        lines, folders = [], set()
        for d in docs:
            rest = d.path[len(prefix):]
            if "/" in rest:
                top = rest.split("/")[0]
                if top not in folders:
                    folders.add(top)
                    lines.append(f"{ROOT}/{prefix}{top}/")
                if rest.count("/") > 1:
                    continue  # two levels deep, as the tool's own listing
            lines.append(f"{_size(d.size)}\t{ROOT}/{d.path}" + (f"  ({d.description})" if d.description else ""))
        where = f"{ROOT}/{prefix}".rstrip("/")
        head = f"Here're the files and directories up to 2 levels deep in {where}:"
        return head + ("\n" + "\n".join(lines) if lines else "\n(empty)")


def _relative(path: Any) -> str:
    """A tool path (``/memories/a/b.md``) as a workspace path (``a/b.md``)."""
    if not isinstance(path, str) or not path.strip():
        raise ValidationError("empty path", hint=f"paths start with {ROOT}, e.g. {ROOT}/notes.md")
    p = path.strip()
    if p != ROOT and not p.startswith(ROOT + "/"):
        raise ValidationError(f"path {path!r} is outside {ROOT}", hint=f"e.g. {ROOT}/project/notes.md")
    return p[len(ROOT):].lstrip("/")


def _size(n: int) -> str:
    return f"{n / 1024:.1f}K" if n >= 1024 else f"{n}B"


__all__ = ["ROOT", "TOOL", "MemoryTool"]
