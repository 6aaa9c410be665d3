"""The writer and the readers as different models (``Protocol(writer_llm=…)``,
``lifelong learn eval --writer``)."""

from __future__ import annotations

import pytest

from lifelong.errors import ConfigError
from lifelong.learn.protocol import Protocol, ProtocolConfig
from lifelong.learn.strategies import get_strategy
from lifelong.learn.suites import load_suite
from tests.learn.scripted import ScriptedLLM, ScriptedSession


def _run(tmp_path, writer_llm, episodes=3):
    seen = []

    def factory(llm, notes, docs, options):
        seen.append(("writer" if options["reflect"] else "reader", llm.name))
        return ScriptedSession(llm, notes, docs, options)

    config = ProtocolConfig(episodes=episodes, readers=2, seed=0, note_budget_tokens=400)
    result = Protocol(ScriptedLLM(name="readers"), load_suite("onboarding", 0), get_strategy("notes"), config,
                      tmp_path, session_factory=factory, writer_llm=writer_llm).run()
    return seen, result


def test_the_writer_session_gets_the_writer_model_and_readers_the_reader_model(tmp_path):
    seen, result = _run(tmp_path / "two", ScriptedLLM(name="trained-writer"))
    assert seen == [("writer", "trained-writer"), ("reader", "readers"), ("reader", "readers")] * 3
    header = result.records[0]
    assert (header["model"], header["writer"]) == ("readers", "trained-writer")
    # One model for both: the header is what it always was (old logs still resume).
    seen, result = _run(tmp_path / "one", None)
    assert {name for _, name in seen} == {"readers"} and "writer" not in result.records[0]


def test_resuming_with_another_writer_is_refused(tmp_path):
    _run(tmp_path, ScriptedLLM(name="trained-writer"), episodes=1)
    with pytest.raises(ConfigError, match="writer"):
        _run(tmp_path, ScriptedLLM(name="other-writer"), episodes=2)
    with pytest.raises(ConfigError, match="writer"):
        _run(tmp_path, None, episodes=2)  # the writer was another model than the readers
    _run(tmp_path, ScriptedLLM(name="trained-writer"), episodes=2)  # the same writer: resumes
