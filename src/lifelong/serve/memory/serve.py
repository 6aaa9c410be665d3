"""Load a ``lifelong train`` checkpoint and serve it: ``lifelong serve CHECKPOINT``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError


@dataclass
class ServeConfig:
    checkpoint: str
    store: str  # sqlite:///… or postgresql://…
    dtype: str = "float32"
    max_batch: int = 64
    memory_budget_mb: float = 1024.0
    max_input_tokens: int = 8192
    max_new_tokens: int = 1024
    batching: bool = True
    schedule: str = "continuous"
    tokens: dict[str, str] = field(default_factory=dict)  # bearer token -> tenant
    threads: int | None = None


def parse_tokens(specs: list[str]) -> dict[str, str]:
    """``TENANT:TOKEN`` pairs (a token names one tenant)."""
    out: dict[str, str] = {}
    for spec in specs:
        tenant, sep, token = spec.partition(":")
        if not sep or not tenant or len(token) < 8:
            raise ConfigError("a tenant token is TENANT:TOKEN, the token at least 8 characters",
                              hint="e.g. --token acme:$(openssl rand -hex 16)")
        if token in out:
            raise ConfigError(f"one token given to two tenants ({out[token]}, {tenant})",
                              hint="give every tenant its own token")
        out[token] = tenant
    return out


def build(config: ServeConfig) -> tuple[Any, Any, str]:
    """``(app, engine, model name)`` for a checkpoint."""
    import torch

    from lifelong.data.tokenizer import load_tokenizer
    from lifelong.serve.memory.app import build_app
    from lifelong.serve.memory.engine import Engine, EngineConfig
    from lifelong.serve.memory.store import SessionStore
    from lifelong.train.checkpoint import load_checkpoint

    if config.schedule not in ("continuous", "waves"):
        raise ConfigError(f"unknown schedule {config.schedule!r}", hint="continuous or waves")
    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
    if config.dtype not in dtypes:
        raise ConfigError(f"unknown dtype {config.dtype!r}", hint="float32, float64 or bfloat16")
    if config.threads:
        torch.set_num_threads(config.threads)
    model, meta = load_checkpoint(config.checkpoint)
    model = model.to(dtypes[config.dtype]).eval()
    tok_spec = meta.get("tokenizer")
    tokenizer = load_tokenizer(tok_spec) if tok_spec else None
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError("the checkpoint's tokenizer is larger than its vocabulary",
                          hint="the checkpoint is inconsistent; serve another")
    with torch.no_grad():  # the first forward of a process loads the native kernels: before serving
        model(torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device), None)
    store = SessionStore(config.store, model.fingerprint())
    engine = Engine(model, store, EngineConfig(
        max_batch=config.max_batch, memory_budget_bytes=int(config.memory_budget_mb * (1 << 20)),
        max_input_tokens=config.max_input_tokens, max_new_tokens=config.max_new_tokens,
        batching=config.batching, schedule=config.schedule))
    name = f"{model.config.kind}:{Path(str(meta.get('path', config.checkpoint))).name}"
    app = build_app(engine, model_name=name, tokenizer=tokenizer, tokens=config.tokens or None)
    return app, engine, name


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8100,
          log_level: str = "warning", ready: Any = None) -> None:
    """Serve until interrupted."""
    import uvicorn

    app, engine, name = build(config)
    if ready:
        ready(name)
    try:
        # clients that wait on a busy server keep their connections: a longer keep-alive than
        # uvicorn's 5 s default avoids reusing a connection the server is closing
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=75)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
        engine.store.close()
