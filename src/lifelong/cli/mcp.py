"""``lifelong mcp``: the notes and docs of one namespace as an MCP server, over
stdio (a client starts it) or streamable HTTP (clients connect by URL).

Same store, namespace, model and workspace options as ``lifelong notes …`` and
``lifelong docs …``. The server answers at once: the model named by
``--model`` (its tokenizer counts notes and pages) loads in the background and
the first call that counts waits for it; a GGUF spec's context window, which
sets the notes budget unless ``--note-budget`` is given, is read from the spec.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifelong.cli.common import MemoryArgs, err_console, memory_options

CreateOpt = Annotated[bool, typer.Option("--create/--no-create",
                                         help="Create the namespace if it is new (--no-create: "
                                         "refuse to start on an unknown namespace).")]
TransportOpt = Annotated[str, typer.Option("--transport", "-t",
                                           help="stdio (the client starts this command) or http "
                                           "(streamable HTTP at http://HOST:PORT/mcp).")]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on (http).")]
PortOpt = Annotated[int, typer.Option("--port", help="Port to listen on (http).")]


@memory_options("model", "budget", "workspace", "author")
def mcp_cmd(create: CreateOpt = True, transport: TransportOpt = "stdio", host: HostOpt = "127.0.0.1",
            port: PortOpt = 8765, *, mem: MemoryArgs) -> None:
    """Serve the notes and docs of one namespace to MCP clients.

    Tools: notes_view, notes_list, notes_add, notes_edit, notes_supersede,
    notes_delete, notes_history, docs_tree, docs_search, docs_read, docs_write,
    docs_append, docs_str_replace, docs_insert, docs_delete, docs_rename.
    Errors come back as tool errors. Over stdio the server runs until the
    client closes its stdin; over http until interrupted.
    """
    from lifelong.errors import ConfigError, NotFoundError

    if transport not in ("stdio", "http"):
        raise ConfigError(f"unknown transport {transport!r}", hint="use stdio or http")
    try:
        from lifelong.serve.mcp import serve_http, serve_stdio
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "mcp":
            raise
        raise ConfigError("the MCP SDK 2.x (mcp >= 2.3) is not installed",
                          hint="pip install 'lifelong[mcp]' (or pip install -U mcp)") from None

    with mem.open(create=create) as c:
        # Fail before serving: a bad store, namespace or spec is reported here, not per call.
        if not create:
            try:
                c.store.require_namespace(mem.namespace)
            except NotFoundError as exc:
                raise NotFoundError(exc.message, hint="check --namespace, or leave out "
                                    "--no-create to start it empty") from None
        notes = c.notes(counting=True, create=create)  # the budget, without loading the model
        docs = c.docs()
        if transport == "stdio":
            serve_stdio(notes, docs, on_start=c.model.preload)
        else:
            c.model.preload()
            serve_http(notes, docs, host=host, port=port, ready=lambda url: err_console.print(
                f"serving the memory of {mem.namespace} at {url} (MCP streamable HTTP)", highlight=False))


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_cmd)
