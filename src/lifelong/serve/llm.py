"""Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP server, in this process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def serve_forever(spec: str = "local", *, host: str = "127.0.0.1", port: int = 8080,
                  ready: Callable[[str], None] | None = None) -> None:
    """Start llama.cpp's server on HOST:PORT and block until SIGINT or SIGTERM."""
    from lifelong.llm.local import LocalLLM
    from lifelong.llm.spec import resolve_gguf

    path, cfg, name = resolve_gguf(spec, host=host, port=port)
    llm = LocalLLM(path, cfg, name=name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if ready:
        ready(llm.address)
    try:
        stop.wait()
    finally:
        llm.close()
