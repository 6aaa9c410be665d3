"""Tasks: what a session is asked to do, and how its answer is scored.

A ``Task`` is one piece of work: a prompt, an optional environment (documents
the model may read while working), an optional checker returning a score in
[0, 1], and optional feedback the world gives after a wrong attempt. A
``TaskFamily`` is a seeded generator of unlimited distinct, similar tasks that
share the hidden knowledge of one "world" (an organisation's conventions, the
rules of a made-up game): exactly what memories written on one task should
carry to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Checker = Callable[[str], float]
Feedback = Callable[[str, float], "str | None"]


@dataclass
class Task:
    """One task.

    ``environment`` maps a path to a document's text; a session shows the
    model these paths and lets it read them a page at a time. ``feedback``,
    called after an attempt with the answer and its score, returns what the
    world says (``None`` for nothing); with ``max_attempts > 1`` the model
    tries again with that feedback in view.
    """

    prompt: str
    check: Checker | None = None
    family: str = "adhoc"
    id: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    feedback: Feedback | None = None
    max_attempts: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)

    def score(self, answer: str) -> float | None:
        """The checker's score clipped to [0, 1], or ``None`` without a checker."""
        if self.check is None:
            return None
        value = float(self.check(answer))
        return min(1.0, max(0.0, value))


class TaskFamily(Protocol):
    """A seeded generator of similar tasks sharing one world."""

    name: str

    def sample(self, rng: Any) -> Task: ...
