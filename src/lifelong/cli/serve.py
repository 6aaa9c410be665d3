"""``lifelong serve``: a trained memory model for many sessions, each with its own memory.

See :mod:`lifelong.serve.memory` for the routes and how requests are batched.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from lifelong.cli.common import err_console


def serve_cmd(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint of lifelong train: a run directory "
                                              "(its newest checkpoint), one checkpoint, or a save_pretrained folder.")],
    store: Annotated[str | None, typer.Option("--store", help="Where session states last: sqlite:///path.db "
                                              "or postgresql://… (default $LIFELONG_STORE, else "
                                              "sessions.db in the data dir).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8100,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, float64 or bfloat16.")] = "float32",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Sessions in one forward.")] = 64,
    batching: Annotated[bool, typer.Option(help="Batch sessions together (--no-batching: one at a "
                                           "time, the baseline).")] = True,
    schedule: Annotated[str, typer.Option("--schedule", help="continuous: a request joins the next "
                                          "forward; waves: requests start together when the previous "
                                          "ones are done (more sessions per forward, more waiting).")] = "continuous",
    memory_budget: Annotated[float, typer.Option("--memory-budget", min=0.0, help="MiB of states kept "
                                                 "in memory; idle ones beyond it are evicted.")] = 1024.0,
    max_input_tokens: Annotated[int, typer.Option("--max-input-tokens", min=1)] = 8192,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=0)] = 1024,
    token: Annotated[list[str] | None, typer.Option("--token", help="TENANT:TOKEN (repeatable): require "
                                                    "bearer tokens; each tenant sees only its sessions. "
                                                    "Also read from $LIFELONG_SERVE_TOKENS, comma-separated.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Torch CPU threads.")] = None,
) -> None:
    """Serve a memory model: sessions by id, each with its own memory state, batched.

    Routes: /v1/sessions (create, list, fork, delete, append, generate, state),
    /v1/completions (OpenAI; the session in the body's "session" or the
    X-Lifelong-Session header), /health, /metrics.
    """
    from lifelong.cli.proxy import _check_port
    from lifelong.serve.memory.serve import ServeConfig, parse_tokens, serve

    if store is None:
        from lifelong.paths import data_dir

        store = os.environ.get("LIFELONG_STORE") or f"sqlite:///{data_dir(create=True) / 'sessions.db'}"
    specs = list(token or []) + [t for t in os.environ.get("LIFELONG_SERVE_TOKENS", "").split(",") if t.strip()]
    config = ServeConfig(checkpoint=checkpoint, store=store, dtype=dtype, max_batch=max_batch,
                         memory_budget_mb=memory_budget, max_input_tokens=max_input_tokens,
                         max_new_tokens=max_new_tokens, batching=batching, schedule=schedule,
                         tokens=parse_tokens(specs),
                         threads=threads)
    _check_port(host, port)
    serve(config, host=host, port=port, ready=lambda name: err_console.print(
        f"serving {name} at http://{host}:{port}/v1", highlight=False, markup=False))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
