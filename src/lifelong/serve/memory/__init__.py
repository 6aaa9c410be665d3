"""``lifelong serve``: many sessions, each with its own memory state, batched in one forward.

``engine`` (the batching worker), ``store`` (states in SQLite / PostgreSQL, versioned),
``states`` (stack, split, bytes), ``app`` (the HTTP routes), ``serve`` (load a checkpoint
and run it)."""

from lifelong.serve.memory.engine import Engine, EngineConfig, Job
from lifelong.serve.memory.store import Conflict, SessionStore

__all__ = ["Conflict", "Engine", "EngineConfig", "Job", "SessionStore"]
