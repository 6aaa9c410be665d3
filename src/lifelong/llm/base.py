"""The one protocol every model backend speaks.

``complete`` takes a plain prompt (for base models and text protocols) or a
list of chat messages (for chat models, optionally with native tool calls),
and returns a ``Completion`` whose token counts come from the backend's own
tokenizer or the server's usage numbers, never from a character heuristic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant"|"tool", "content": str, ...}
Prompt = str | Sequence[Message]


@dataclass(frozen=True)
class ToolCall:
    """A native tool call returned by a chat model."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "tool_calls" | ...
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    latency_s: float = 0.0


@runtime_checkable
class LLM(Protocol):
    """What lifelong needs from a model, whatever serves it."""

    name: str
    context_window: int

    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


def render_messages(messages: Sequence[Message]) -> str:
    """Plain-text transcript of chat messages, for counting and for base models."""
    parts = []
    for m in messages:
        parts.append(f"{m.get('role', 'user')}: {m.get('content') or ''}")
    return "\n".join(parts)


def check_messages(prompt: Prompt) -> None:
    """Reject malformed chat input early, with a message that says what is wrong."""
    from lifelong.errors import ValidationError

    if isinstance(prompt, str):
        return
    if not prompt:
        raise ValidationError("empty message list", hint="pass a prompt string or at least one message")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or "role" not in m:
            raise ValidationError(
                f"message {i} is not a dict with a 'role'",
                hint='messages look like {"role": "user", "content": "..."}',
            )
