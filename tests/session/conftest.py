from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.llm import Completion, ToolCall


@dataclass
class ScriptedLLM:
    """A model that says what the test scripts: pins down prompt assembly and parsing.

    ``replies`` are returned in order (a callable gets the prompt). Tokens are
    whitespace words. Every prompt is kept for the test to inspect.
    """

    replies: list[str | Completion | Callable[[object], str]]
    context_window: int = 4096
    name: str = "scripted"
    prompts: list[object] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        return word_count(text)

    def complete(self, prompt, *, max_tokens=256, stop: Sequence[str] | None = None, temperature=0.0,
                 seed=None, tools=None) -> Completion:
        self.prompts.append(prompt)
        self.kwargs.append({"max_tokens": max_tokens, "stop": stop, "tools": tools})
        if not self.replies:
            raise AssertionError(f"unscripted call #{len(self.prompts)}: {str(prompt)[-300:]}")
        r = self.replies.pop(0)
        if isinstance(r, Completion):
            return r
        text = r(prompt) if callable(r) else r
        n = word_count(prompt if isinstance(prompt, str) else str(prompt))
        return Completion(text=text, prompt_tokens=n, completion_tokens=word_count(text), finish_reason="stop")

    def close(self) -> None:
        pass


def tool_call(name: str, **arguments) -> Completion:
    return Completion(text="", prompt_tokens=10, completion_tokens=5, finish_reason="tool_calls",
                      tool_calls=(ToolCall(id=f"c-{name}", name=name, arguments=arguments),))


@pytest.fixture
def memory(tmp_path):
    """A fresh SQLite store with notes and docs of namespace 'acme' (word-count tokens)."""
    store = open_store(f"sqlite:///{tmp_path}/memory.db")
    notes = Notes(store, "acme", 2000, word_count, create=True)
    docs = Docs(store, "acme", tmp_path / "docs", word_count, create=True)
    yield notes, docs
    store.close()
