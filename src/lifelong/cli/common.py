"""What the commands share: consoles, the memory options, opening a store and a model.

The commands that work on a namespace's memory (``notes``, ``docs``, ``run``,
``consolidate``, ``mcp``) take the same options. They are declared once here
and added to a command by :func:`memory_options`, which hands the command one
:class:`MemoryArgs`; ``MemoryArgs.open()`` opens the store (and, lazily, the
model) for the command and closes them after it.

The model named by ``--model`` (default ``$LIFELONG_MODEL`` or ``local``) is
loaded only by commands that need it (to answer, or to count tokens), so
listing and rendering stay instant.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

MODEL_HELP = "Model spec: local, llamacpp:PATH, openai:URL#MODEL, hf:PATH (default: $LIFELONG_MODEL or local)."

# -- the memory options ----------------------------------------------------------------------

StoreOpt = Annotated[str | None, typer.Option("--store", envvar="LIFELONG_STORE", show_envvar=True,
                                               help="Store URL: sqlite:///path.db or postgresql://… "
                                               "(default: <data dir>/lifelong.db).")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", envvar="LIFELONG_NAMESPACE", show_envvar=True,
                                           help="Tenant/agent whose memory this is.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", envvar="LIFELONG_MODEL", show_envvar=True,
                                              help=MODEL_HELP)]
NoteBudgetOpt = Annotated[int | None, typer.Option("--note-budget", "--budget", min=1,
                                                   help="Notes budget in tokens (default: the model's "
                                                   "context window − task reserve).")]
ReserveOpt = Annotated[int | None, typer.Option("--task-reserve", help="Tokens kept for the task "
                                                "(default: half the context window).")]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", envvar="LIFELONG_DOCS", show_envvar=True,
                                                   help="Docs root; each namespace is a folder in it "
                                                   "(default: <data dir>/docs).")]
AuthorOpt = Annotated[str, typer.Option("--author", envvar="LIFELONG_AUTHOR",
                                        help="Who writes (recorded as the author model).")]
SessionOpt = Annotated[str, typer.Option("--session", help="Source session id to record.")]
TaskOpt = Annotated[str, typer.Option("--task", help="Source task to record.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class MemoryArgs:
    """The memory options of one command invocation."""

    store: str | None = None
    namespace: str = "default"
    model: str | None = None
    note_budget: int | None = None
    task_reserve: int | None = None
    workspace: Path | None = None
    author: str = ""
    session: str = ""
    task: str = ""

    def open(self) -> Ctx:
        return Ctx(self)


# option groups a command can ask for; the store and namespace always come
_OPTION_TYPES: dict[str, Any] = {
    "store": StoreOpt, "namespace": NamespaceOpt, "model": ModelOpt, "note_budget": NoteBudgetOpt,
    "task_reserve": ReserveOpt, "workspace": WorkspaceOpt, "author": AuthorOpt, "session": SessionOpt,
    "task": TaskOpt,
}
_GROUPS = {
    "model": ("model",),
    "budget": ("note_budget", "task_reserve"),
    "workspace": ("workspace",),
    "author": ("author",),
    "provenance": ("author", "session", "task"),
}


def memory_options(*groups: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``--store`` and ``--namespace`` plus the named option groups
    (``model``, ``budget``, ``workspace``, ``author``, ``provenance``); the command
    takes them as one keyword argument ``mem: MemoryArgs``."""
    names = ["store", "namespace"]
    for group in groups:
        names += [n for n in _GROUPS[group] if n not in names]
    defaults = {f.name: f.default for f in fields(MemoryArgs)}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        # the command's own annotations, evaluated in its module (typer reads them off the wrapper)
        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name != "mem"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=defaults[n],
                                   annotation=_OPTION_TYPES[n]) for n in names]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            mem = MemoryArgs(**{n: kwargs.pop(n) for n in names})
            return fn(*args, mem=mem, **kwargs)

        command.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + added}
        command.__annotations__["return"] = hints.get("return")
        return command

    return decorate


def load_llm(spec: str | None = None) -> Any:
    """``lifelong.llm.load_llm``, with the backends that live in higher layers registered
    first (``hf-cms:``, the retrofitted Gemma of ``lifelong.neural.retrofit``)."""
    import importlib
    import os

    from lifelong.llm import load_llm as open_spec
    from lifelong.llm.spec import backend_home

    home = backend_home(spec or os.environ.get("LIFELONG_MODEL") or "local")
    if home:
        importlib.import_module(home)  # registers its backend
    return open_spec(spec)


class LazyModel:
    """Loads the model on first use. Loaded models are kept for the life of the
    process (one command per process from the shell; many when commands are
    called in-process), since loading is the slow part."""

    _loaded: dict[str | None, Any] = {}

    def __init__(self, spec: str | None) -> None:
        self.spec = spec or None

    @property
    def llm(self) -> Any:
        if self.spec not in self._loaded:
            self._loaded[self.spec] = load_llm(self.spec)
        return self._loaded[self.spec]

    def count_tokens(self, text: str) -> int:
        return int(self.llm.count_tokens(text))


class Ctx:
    """The store (and, if asked, the model) of one command; closes the store after it."""

    def __init__(self, args: MemoryArgs) -> None:
        from lifelong.context import open_store

        self.args = args
        self.store = open_store(args.store)
        self.model = LazyModel(args.model)

    def notes(self, *, counting: bool, create: bool = False, budget: int | None = None):
        """The namespace's notes. ``counting``: count tokens with the model and
        enforce the budget (``budget`` overrides ``--note-budget``)."""
        from lifelong.context import Notes, budget_for

        a = self.args
        if not counting:
            return Notes(self.store, a.namespace, sys.maxsize, None, create=create)  # read-only
        budget = budget if budget is not None else a.note_budget
        if budget is None:
            budget = budget_for(self.model.llm, a.task_reserve)
        return Notes(self.store, a.namespace, budget, self.model.count_tokens, model=a.author,
                     create=create)

    def docs(self, *, create: bool = False):
        from lifelong.context import Docs
        from lifelong.context.docs import default_docs_root

        a = self.args
        root = a.workspace if a.workspace is not None else default_docs_root()
        return Docs(self.store, a.namespace, root, self.model.count_tokens, model=a.author, create=create)

    def __enter__(self) -> Ctx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


# -- small helpers ---------------------------------------------------------------------------


def when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_json(obj: Any) -> None:
    console.print_json(json.dumps(obj, default=str))


def text_arg(text: str | None, file: Path | None) -> str:
    """A command's text: the argument, ``--file``, or stdin; UTF-8, or a clear error."""
    from lifelong.errors import NotFoundError, ValidationError

    if text is not None and file is not None:
        raise ValidationError("give the text or --file, not both")
    if text is not None:
        return text
    if file is not None:
        try:
            data, where = file.read_bytes(), str(file)
        except FileNotFoundError:
            raise NotFoundError(f"no file {str(file)!r}", hint="check the path given to --file") from None
        except OSError as exc:
            raise ValidationError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
    else:
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:  # already text (a test's StringIO, an embedding program)
            return sys.stdin.read()
        data, where = stdin.read(), "stdin"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                              hint="convert it first, e.g. iconv -f latin1 -t utf-8 FILE") from None
