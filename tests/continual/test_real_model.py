"""The built-in learners on the embedded model (slow: a few dozen model calls).

The language's size is what the benchmark relies on: with no material the model's
chrF is near the floor, with the material in context clearly above it."""

from __future__ import annotations

import pytest

from lifelong.continual.harness import run_stream
from lifelong.continual.learners import make_learner
from lifelong.data.registry import get_stream

pytestmark = pytest.mark.slow


def test_material_in_context_lifts_chrf_well_above_no_material(local_llm) -> None:
    tasks = get_stream("novel_translation", 0, languages=1, test=4)
    none = run_stream(make_learner("none", local_llm), tasks)
    icl = run_stream(make_learner("icl", local_llm), tasks)
    assert none.R[0][0] < 12.0
    assert icl.R[0][0] > none.R[0][0] + 10.0
    assert icl.cost["context_tokens_per_query"] > 400 > none.cost["context_tokens_per_query"]


def test_context_memory_writes_notes_and_docs_and_answers_with_them(local_llm, tmp_path) -> None:
    tasks = get_stream("class_incremental", 0, tasks=1, classes=2, test=1)
    learner = make_learner("memory+docs", local_llm, root=tmp_path)
    try:
        r = run_stream(learner, tasks)
        pages = sorted(p.name for p in (tmp_path / "docs" / "continual").glob("*.md"))
        assert "task0-material.md" in pages
        assert len(learner.log) == 1 and learner.log[0]["task"] == "task0"
        assert learner.log[0]["docs"] == ["task0.md"]  # the reflection's entry
        assert r.cost["memory_tokens"] > 200 and r.cost["state_bytes"] > 500
        assert r.cost["context_tokens_per_query"] > 200  # the material page was put in the prompt
        assert 0.0 <= r.R[0][0] <= 1.0
    finally:
        learner.close()
    assert (tmp_path / "memory.db").exists()  # a given root is the caller's to keep
