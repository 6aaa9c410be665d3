"""The one protocol every model backend speaks.

``complete`` takes a plain prompt (for base models and text protocols) or a
list of chat messages (for chat models, optionally with native tool calls),
and returns a ``Completion`` whose token counts come from the backend's own
tokenizer or the server's usage numbers, never from a character heuristic.
"""

from __future__ import annotations

import re
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
    """Reject malformed chat input early, with a message that says what is wrong
    (text that is not UTF-8 -- lone surrogates from bytes of another encoding --
    would otherwise fail deep inside a tokenizer or a JSON encoder)."""
    from lifelong.errors import ValidationError

    def utf8(text: object, where: str) -> None:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValidationError(f"{where} is not valid UTF-8 (an undecodable byte at character "
                                      f"{exc.start})", hint="decode the text as UTF-8 first") from None

    if isinstance(prompt, str):
        utf8(prompt, "the prompt")
        return
    if not prompt:
        raise ValidationError("empty message list", hint="pass a prompt string or at least one message")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or "role" not in m:
            raise ValidationError(
                f"message {i} is not a dict with a 'role'",
                hint='messages look like {"role": "user", "content": "..."}',
            )
        utf8(m.get("content"), f"message {i}")


def clean_text(text: str) -> str:
    """A model's reply as valid text: a lone surrogate (JSON can carry one, a
    server may send one) becomes U+FFFD instead of failing the next encode."""
    return _LONE_SURROGATE.sub("\ufffd", text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
