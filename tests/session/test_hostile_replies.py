"""What a model writes is untrusted input. Replies a small base model can
plausibly write -- a folder for a path, a name too long for the disk, an id
beyond 64 bits, a lone surrogate -- become observations the model reads, and
the session (and a whole `learn eval` run) goes on with its answer, score and
transcript. Property tests throw arbitrary replies at a Session."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.context.session import Session, SessionConfig
from lifelong.llm import Completion
from lifelong.task import Task

from .conftest import ScriptedLLM, tool_call


def task(**kw) -> Task:
    return Task(prompt="What is the code word?", check=lambda a: float("MARIGOLD" in a),
                family="acme", id="t1", **kw)


def observations(out) -> list[str]:
    return [m["content"] for m in out.transcript if m["role"] == "tool"]


def test_replies_that_crashed_a_session_become_observations(memory):
    notes, docs = memory
    docs.write("plain.md", "The code word is MARIGOLD.")
    (docs.folder / "adir.md").mkdir()
    reads = ["READ .", "READ plain.md/x", "READ " + "a" * 300, "READ adir.md", "READ plain.md 99999999999"]
    llm = ScriptedLLM(reads + ["MARIGOLD", "DELETE 99999999999999999999", "entry"])
    out = Session(llm, notes, docs, SessionConfig(max_steps=5)).run(task())
    assert out.answer == "MARIGOLD" and out.score == 1.0 and out.error is None
    seen = observations(out)
    assert len(seen) == 5 and all(o.startswith("(error: ") for o in seen), seen
    assert "names a folder" in seen[0] and "no document" in seen[1] and "255 bytes" in seen[2]
    assert "is a folder" in seen[3] and "outside" in seen[4]
    assert any("note not written: no note 99999999999999999999" in w for w in out.warnings)
    assert not [w for w in out.warnings if w.startswith("bug:")]
    assert out.docs_written == ["acme.md"]  # reflection went on to write its doc


def test_a_note_with_a_lone_surrogate_is_refused_not_fatal(memory):
    notes, docs = memory
    llm = ScriptedLLM(["MARIGOLD", "The code word is MARIG\udcffOLD.", "entry"])
    out = Session(llm, notes, docs).run(task())
    assert out.score == 1.0 and out.notes_written == []
    assert any("not valid UTF-8" in w for w in out.warnings)
    assert notes.list() == []


def test_tool_calls_with_bad_arguments_become_observations(memory):
    notes, docs = memory
    docs.write("plain.md", "The code word is MARIGOLD.")
    llm = ScriptedLLM([tool_call("read", path=".", offset=0), tool_call("read", path="plain.md", offset="abc"),
                       tool_call("read", path="plain.md", offset=[1]), tool_call("search", query="\x00"),
                       Completion("MARIGOLD", 10, 1, "stop")])
    out = Session(llm, notes, docs, SessionConfig(protocol="tools", reflect=False, max_steps=5)).run(task())
    assert out.answer == "MARIGOLD"
    seen = observations(out)
    assert all(o.startswith("(error: ") for o in seen), seen
    assert "is not a whole number" in seen[1] and "is not a whole number" in seen[2]


def test_an_unexpected_error_in_a_tool_is_an_observation_and_a_warning(memory, monkeypatch):
    notes, docs = memory
    monkeypatch.setattr(Docs, "read", lambda *a, **k: 1 / 0)
    llm = ScriptedLLM(["READ x.md", "MARIGOLD"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False)).run(task())
    assert out.answer == "MARIGOLD" and observations(out) == ["(error: READ failed)"]
    assert out.warnings == ["bug: READ 'x.md' raised ZeroDivisionError('division by zero')"]


def test_a_learn_run_survives_hostile_replies_and_a_broken_session(tmp_path):
    from lifelong.errors import ConfigError  # noqa: F401  (the protocol's own errors stay LifelongErrors)
    from lifelong.learn.protocol import Protocol, ProtocolConfig
    from lifelong.learn.strategies import get_strategy
    from lifelong.learn.suites import load_suite

    hostile = ["READ .", "READ " + "b" * 400, "I do not know", "DELETE 99999999999999999999", "entry"]

    class Hostile:
        name, context_window = "hostile", 8192

        def __init__(self):
            self.i = 0

        def count_tokens(self, text):
            return len(text.split())

        def complete(self, prompt, **kw):
            self.i += 1
            text = hostile[self.i % len(hostile)]
            return Completion(text, self.count_tokens(str(prompt)), 1, "stop")

    calls = {"n": 0}

    def factory(llm, notes, docs, options):
        calls["n"] += 1
        if calls["n"] == 2:  # one session meets a bug
            raise ValueError("boom")
        return Session(llm, notes, docs, SessionConfig(**options))

    config = ProtocolConfig(episodes=2, readers=2)
    result = Protocol(Hostile(), load_suite("onboarding", 0), get_strategy("full"), config,
                      tmp_path / "out", session_factory=factory).run()
    assert len(result.sessions) == 6
    errors = [s["error"] for s in result.sessions if s["error"]]
    assert errors == [errors[0]] and "unexpected ValueError: boom" in errors[0]


# -- property: any reply --------------------------------------------------------------------

PATHS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from([".", "..", "/", "a/../../x", "~/x", "plain.md/x", "adir.md", "a\nb", "\x00", "x\udcff"]),
    st.lists(st.sampled_from(["a", "..", ".", "plain.md", "é", "e\u0301"]), max_size=40).map("/".join),
)
REPLIES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda p: f"READ {p}", PATHS),
    st.builds(lambda p, n: f"READ {p} {n}", PATHS, st.integers(min_value=0, max_value=10**30)),
    st.builds(lambda q: f"SEARCH {q}", st.text(max_size=60)),
    st.builds(lambda n: f"DELETE {n}", st.integers(min_value=-(10**25), max_value=10**25)),
    st.builds(lambda n, t: f"EDIT {n}: {t}", st.integers(min_value=0, max_value=10**25), st.text(max_size=40)),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zl", "Cf"]), max_size=10),
)


@settings(max_examples=60, deadline=None)
@given(replies=st.lists(REPLIES, min_size=1, max_size=8), reflection=REPLIES, protocol=st.sampled_from(["text",
                                                                                                          "tools"]))
def test_any_reply_gives_an_outcome_and_loses_nothing(tmp_path_factory, replies, reflection, protocol):
    tmp = tmp_path_factory.mktemp("s")
    workspace, outside = tmp / "docs", tmp / "outside"
    outside.mkdir()
    (outside / "keep.md").write_text("outside the workspace")
    store = open_store(f"sqlite:///{tmp / 'm.db'}")
    try:
        notes = Notes(store, "acme", 4000, word_count, create=True)
        docs = Docs(store, "acme", workspace, word_count, create=True)
        kept = notes.add("The code word is MARIGOLD.").note
        docs.write("plain.md", "The code word is MARIGOLD.")
        (docs.folder / "adir.md").mkdir()
        if protocol == "tools":
            script = [tool_call("read", path=r.removeprefix("READ ").strip(), offset=r[-3:]) if r.startswith("READ")
                      else Completion(r, 5, 1, "stop") for r in replies]
        else:
            script = list(replies)
        llm = ScriptedLLM(script + ["MARIGOLD"] * 8 + [reflection, "a documentation entry"])
        out = Session(llm, notes, docs, SessionConfig(protocol=protocol, max_steps=4,
                                                      transcript_dir=tmp / "transcripts")).run(task())
        assert out.error is None
        assert not [w for w in out.warnings if w.startswith("bug:")], out.warnings
        assert all(o.startswith(("(error: ", "(no matches)", "(offset", "- ", "The code word"))
                   or "MARIGOLD" in o for o in observations(out)), observations(out)
        # nothing outside the workspace touched, nothing stored lost
        assert sorted(os.listdir(outside)) == ["keep.md"]
        assert (outside / "keep.md").read_text() == "outside the workspace"
        assert sorted(p.name for p in tmp.iterdir()) == sorted(
            ["docs", "outside", "m.db", "m.db-wal", "m.db-shm", "transcripts"])
        assert kept.id in {n.id for n in notes.list(status=None)}
        assert notes.history(kept.id)[0].new_text == kept.text
        assert "MARIGOLD" in (docs.folder / "plain.md").read_text() or docs.history("plain.md")
        assert Path(tmp / "transcripts" / "acme" / f"{out.session_id}.json").is_file()
    finally:
        store.close()
