"""End to end with the real embedded model (Gemma 3 270M through llama.cpp)."""

from __future__ import annotations

from lifelong.context import Docs, Notes, open_store
from lifelong.context.consolidate import consolidate
from lifelong.context.session import Session, SessionConfig
from lifelong.task import Task


def _contains(word):
    return lambda answer: 1.0 if word.lower() in answer.lower() else 0.0


def test_a_session_writes_memories_and_a_fresh_session_uses_them(local_llm, tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/memory.db")
    notes = Notes.for_llm(store, "acme", local_llm, create=True)
    docs = Docs(store, "acme", tmp_path / "docs", local_llm.count_tokens, create=True)

    # Task 1: the model cannot know the code word; the world tells it after a wrong answer.
    first = Task(prompt="What is the code word of the Blue team?", check=_contains("MARIGOLD"),
                 feedback=lambda a, s: "Wrong. The Blue team's code word is MARIGOLD.",
                 family="acme", id="blue-1")
    out1 = Session(local_llm, notes, docs, SessionConfig(transcript_dir=tmp_path / "tr")).run(first)
    assert out1.score == 0.0 and out1.feedback
    assert out1.notes_written and out1.docs_written == ["acme.md"]
    assert "MARIGOLD" in notes.render()  # the note carries the lesson
    assert "MARIGOLD" in docs.read("acme.md", max_tokens=4000).text
    assert (tmp_path / "tr" / "acme" / f"{out1.session_id}.json").exists()

    # Task 2, related: a fresh instance with the memories answers; one without cannot.
    second = Task(prompt="A new member joins the Blue team. Which code word must they use?",
                  check=_contains("MARIGOLD"), family="acme", id="blue-2")
    with_memory = Session(local_llm, notes, docs, SessionConfig(reflect=False)).run(second)
    without = Session(local_llm, None, None, SessionConfig(reflect=False)).run(second)
    assert with_memory.score == 1.0, with_memory.transcript
    assert without.score == 0.0
    assert with_memory.context_tokens > without.context_tokens


def test_consolidation_with_the_real_model_is_smaller_or_changes_nothing(local_llm, tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/memory.db")
    notes = Notes.for_llm(store, "acme", local_llm, create=True)
    for text in ["The Blue team's code word is MARIGOLD.",
                 "The code word of the Blue team is MARIGOLD, use it in every message.",
                 "Reports are due on Friday.",
                 "Tickets for the operations team use the prefix OPS-."]:
        notes.add(text)
    before, ids = notes.tokens(), [n.id for n in notes.list()]
    result = consolidate(local_llm, notes, None)
    if result.applied:
        assert notes.tokens() < before
        assert {n.id for n in notes.list(status=None)} >= set(ids)  # old notes recoverable
    else:
        assert notes.tokens() == before and [n.id for n in notes.list()] == ids
