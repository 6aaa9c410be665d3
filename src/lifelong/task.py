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

import hashlib
import re
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


# --- Checkers -----------------------------------------------------------------
# A base model continues past its answer ("Paris\nQuestion: ..."), wraps it in
# prose ("The capital of France is Paris.") or repeats the label. Checkers read
# only the first non-empty line, ignore case, punctuation and a leading
# "Answer:", and are strict only about the fact that matters.

_LABEL_RE = re.compile(r"^\s*(answer|a)\s*[:\-]\s*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def answer_line(answer: str) -> str:
    """The first non-empty line of an answer, without a leading ``Answer:`` label."""
    for line in (answer or "").splitlines():
        line = _LABEL_RE.sub("", line).strip()
        if line:
            return line
    return ""


def _words(text: str) -> str:
    # Lower-case, punctuation to spaces (except the characters paths and codes
    # are made of), padded so " word " tests are whole-word tests.
    cleaned = re.sub(r"[^\w/.\-]+", " ", text.lower())
    cleaned = re.sub(r"(?<![\w/])[.\-]+|[.\-]+(?![\w/])", " ", cleaned)
    # A trailing slash is formatting, not content: "/srv/x/" == "/srv/x". Outside
    # paths a hyphen separates words, so the prefix ZQX is found in "ZQX-1234".
    tokens = [t.rstrip("/") or t if "/" in t else t.replace("-", " ") for t in cleaned.split()]
    return f" {' '.join(' '.join(tokens).split())} "


def expect_text(expected: str, *alternatives: str) -> Checker:
    """1.0 when the answer line contains ``expected`` (or an alternative) as whole words."""
    targets = [_words(t).strip() for t in (expected, *alternatives)]

    def check(answer: str) -> float:
        line = _words(answer_line(answer))
        return 1.0 if any(f" {t} " in line for t in targets if t) else 0.0

    return check


def expect_choice(expected: str, options: list[str]) -> Checker:
    """1.0 when the first of ``options`` named in the answer line is ``expected``.

    Strict where it matters: an answer that lists every option ("flip, hold,
    swap…") names the wrong one first and scores 0.
    """
    lowered = [o.lower() for o in options]
    if expected.lower() not in lowered:
        raise ValueError(f"expected choice {expected!r} is not among the options {options}")

    def check(answer: str) -> float:
        line = _words(answer_line(answer))
        hits = [(line.find(f" {o} "), o) for o in lowered if f" {o} " in line]
        return 1.0 if hits and min(hits)[1] == expected.lower() else 0.0

    return check


def expect_number(expected: float) -> Checker:
    """1.0 when the last number on the answer line equals ``expected``.

    The last one, because base models echo the question: "6 + 3 = 9".
    """

    def check(answer: str) -> float:
        numbers = _NUMBER_RE.findall(answer_line(answer))
        return 1.0 if numbers and abs(float(numbers[-1]) - float(expected)) < 1e-9 else 0.0

    return check


def stable_id(*parts: object) -> str:
    """A short id that depends only on ``parts`` (not on the process's hash seed)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return digest[:10]
