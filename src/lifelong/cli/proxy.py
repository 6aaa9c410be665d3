"""``lifelong proxy``: an OpenAI-compatible endpoint that gives any chat client a memory.

Forwards to an upstream OpenAI-compatible server with the namespace's notes
(and documentation tools) put in front of every conversation, and reflects
when a conversation ends. See :mod:`lifelong.serve.proxy` for what "ends" means.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from lifelong.cli.common import MemoryArgs, err_console, memory_options


@memory_options("model", "budget", "workspace")
def proxy_cmd(
    upstream: Annotated[str, typer.Option("--upstream", "-u", help="Base URL of the model server, e.g. "
                                          "http://127.0.0.1:8080/v1 (lifelong llm serve, vLLM, Ollama, …).")],
    upstream_model: Annotated[str | None, typer.Option(
        "--upstream-model", help="Model name that reflects (default: the first one the upstream lists).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8090,
    idle_end: Annotated[float, typer.Option("--idle-end", help="Seconds without a request after which a "
                                            "conversation has ended (0: never by time).")] = 600.0,
    reflect: Annotated[bool, typer.Option(help="Reflect when a conversation ends (write notes and docs).")] = True,
    docs_tools: Annotated[bool, typer.Option(help="Offer the documentation as tools to requests that do "
                                             "not stream.")] = True,
    *, mem: MemoryArgs,
) -> None:
    """Serve an OpenAI-compatible endpoint with memory: point a client's base URL at it.

    Each chat request is forwarded upstream with the notes block and the
    documentation index in front of it. A conversation ends with the header
    X-Lifelong-End: true on its last request, POST /v1/conversations/ID/end,
    IDLE_END seconds without a request, or the proxy stopping; then the model
    reflects on it and writes a note and a documentation entry. The API key
    sent upstream is the client's own, else $LIFELONG_API_KEY or $OPENAI_API_KEY.
    """
    from lifelong.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("the proxy needs FastAPI and uvicorn",
                          hint="pip install 'lifelong[serve]'") from None
    from lifelong.serve.proxy import MemoryProxy, ProxyConfig, serve

    url = upstream.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"not an http(s) URL: {upstream!r}", hint="e.g. --upstream http://127.0.0.1:8080/v1")
    api_key = os.environ.get("LIFELONG_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if mem.model is None:
        mem.model = f"openai:{url}#{upstream_model or _first_model(url, api_key)}"
    with mem.open(create=True) as c:
        notes = c.notes(counting=True, create=True)
        docs = c.docs(create=True)
        llm = c.model.llm if reflect else None
        if llm is not None:
            mem.author = llm.name
            notes.model = docs.model = llm.name
        config = ProxyConfig(upstream=url, api_key=api_key, idle_end_s=idle_end, reflect=reflect,
                             docs_tools=docs_tools)
        proxy = MemoryProxy(notes, docs, config, llm)
        _check_port(host, port)
        err_console.print(f"memory proxy of {mem.namespace} at http://{host}:{port}/v1 → {url}",
                          highlight=False, markup=False)
        serve(proxy, host=host, port=port)


def _first_model(url: str, api_key: str | None) -> str:
    import httpx

    from lifelong.errors import ConfigError

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        data = httpx.get(f"{url}/models", headers=headers, timeout=30).json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"cannot ask {url}/models which model it serves: {exc}",
                          hint="start the upstream server, or name the model with --upstream-model") from None
    if not data:
        raise ConfigError(f"{url}/models lists no model", hint="name the model with --upstream-model")
    return str(data[0].get("id"))


def _check_port(host: str, port: int) -> None:
    import socket

    from lifelong.errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"port {port} on {host} is taken ({exc.strerror or exc})",
                              hint="choose another port (--port), or stop what listens there") from None


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy_cmd)
