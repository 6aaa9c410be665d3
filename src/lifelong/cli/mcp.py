"""``lifelong mcp``: the notes and docs of one namespace as an MCP server over stdio.

Same store, namespace, model and workspace options as ``lifelong notes …`` and
``lifelong docs …``. The model named by ``--model`` is loaded once at start:
its tokenizer counts notes and pages, and its context window sets the notes
budget unless ``--note-budget`` is given.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifelong.cli.common import MemoryArgs, memory_options

CreateOpt = Annotated[bool, typer.Option("--create/--no-create",
                                         help="Create the namespace if it is new (--no-create: "
                                         "refuse to start on an unknown namespace).")]


@memory_options("model", "budget", "workspace", "author")
def mcp_cmd(create: CreateOpt = True, *, mem: MemoryArgs) -> None:
    """Serve the notes and docs of one namespace to MCP clients over stdio.

    Tools: notes_view, notes_list, notes_add, notes_edit, notes_supersede,
    notes_delete, notes_history, docs_tree, docs_search, docs_read, docs_write,
    docs_append, docs_str_replace. Errors come back as tool errors; the server
    runs until the client closes its stdin.
    """
    from lifelong.errors import ConfigError, NotFoundError

    try:
        from lifelong.serve.mcp import serve_stdio, stdout_to_stderr
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "mcp":
            raise
        raise ConfigError("the MCP SDK 2.x (mcp >= 2.3) is not installed",
                          hint="pip install 'lifelong[mcp]' (or pip install -U mcp)") from None

    with mem.open(create=create) as c:
        # Fail before serving: a bad store, namespace or model is reported here, not per call
        # (and an unknown namespace before the model takes its seconds to load).
        if not create:
            try:
                c.store.require_namespace(mem.namespace)
            except NotFoundError as exc:
                raise NotFoundError(exc.message, hint="check --namespace, or leave out "
                                    "--no-create to start it empty") from None
        with stdout_to_stderr():
            c.model.llm  # noqa: B018 - load the tokenizer once, now
        notes = c.notes(counting=True, create=create)
        docs = c.docs()
        serve_stdio(notes, docs)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_cmd)
