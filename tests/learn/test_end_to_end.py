"""The protocol end to end with the real embedded model and the real Session (small N)."""

from __future__ import annotations

import re

import pytest

from lifelong.cli.main import main
from lifelong.learn import Protocol, ProtocolConfig, get_strategy, load_suite, run_side_by_side
from lifelong.learn.protocol import read_jsonl
from lifelong.learn.report import FINAL_LINE_RE
from tests.llm.conftest import llm_server  # noqa: F401  (the real server fixture)

from .scripted import ScriptedLLM, ScriptedSession

SMALL = ["--episodes", "2", "--readers", "1", "--max-tokens", "10", "--reflection-tokens", "24",
         "--doc-tokens", "24"]


@pytest.mark.slow
def test_cli_eval_full_system_with_the_embedded_model(tmp_path, capsys):
    """Two sequential episodes: the second writer works with the first one's notes and docs."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["learn", "eval", "--suite", "onboarding", "--model", "local?ctx=2048", "--strategy", "full",
              "--seed", "3", "--out", str(out), *SMALL])
    assert exc.value.code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(FINAL_LINE_RE, printed[-1]), printed[-1]
    page = (out / "report.html").read_text()
    assert "<td>full</td>" in page and len(list(out.glob("*.png"))) == 4
    records = read_jsonl(out / "full" / "sessions.jsonl")
    assert [r["type"] for r in records] == ["run"] + ["session", "session", "episode"] * 2
    writers = [r for r in records if r["type"] == "session" and r["role"] == "writer"]
    readers = [r for r in records if r["type"] == "session" and r["role"] == "reader"]
    for s in writers + readers:
        assert s["error"] is None and 0.0 <= s["score"] <= 1.0
        assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0 and s["context_tokens"] > 0
    for w in writers:
        assert "reflection" in [m["role"] for m in w["transcript"]]  # asked to write its memory
    # The memory is what the writers left: the second writer started from the first's snapshot.
    assert writers[1]["note_tokens"] == writers[0]["memory_note_tokens"]
    assert writers[1]["doc_tokens"] == writers[0]["memory_doc_tokens"]
    assert readers[0]["note_tokens"] == writers[0]["memory_note_tokens"]
    assert (out / "full" / "memory" / "episode-0001" / "store.db").exists()


@pytest.mark.slow
def test_embedded_model_run_is_repeatable(tmp_path):
    # llama.cpp's prompt cache changes batch shapes, and with them the last bits of the
    # logits; without it the embedded model is deterministic and so is the whole log.
    from lifelong.llm import load_llm

    config = ProtocolConfig(episodes=1, readers=1, seed=5, max_tokens=8, reflection_max_tokens=16)
    suite = load_suite("procedure", 5)
    logs = []
    llm = load_llm("local?ctx=2048&cache_prompt=false")
    try:
        for out in ("a", "b"):
            result = Protocol(llm, suite, get_strategy("add-only"), config, tmp_path / out).run()
            logs.append([{k: v for k, v in r.items() if k != "latency_s"}
                         for r in read_jsonl(result.folder / "sessions.jsonl")])
    finally:
        llm.close()
    assert logs[0] == logs[1]
    assert len(logs[0]) == 1 + 1 + 1 + 1


def test_side_by_side_for_the_demo(tmp_path, capsys):
    summaries = run_side_by_side(ScriptedLLM(), episodes=3, readers=2, out=tmp_path,
                                 session_factory=ScriptedSession)
    assert [s["strategy"] for s in summaries] == ["none", "full"]
    assert summaries[0]["note_tokens"] == 0 and summaries[1]["note_tokens"] > 0
    out = capsys.readouterr().out
    assert "none: reward=" in out and "full: reward=" in out


@pytest.mark.slow
def test_readers_run_concurrently_against_a_server(llm_server, tmp_path):  # noqa: F811 (the fixture)
    """The real Session against llama.cpp's OpenAI-compatible server, 3 readers at once."""
    from lifelong.llm import load_llm

    llm = load_llm(f"openai:{llm_server}/v1#gemma")
    try:
        config = ProtocolConfig(episodes=1, readers=3, seed=2, max_tokens=8, reflection_max_tokens=16,
                                concurrency=3)
        result = Protocol(llm, load_suite("onboarding", 2), get_strategy("notes"), config, tmp_path).run()
    finally:
        llm.close()
    readers = [s for s in result.sessions if s["role"] == "reader"]
    assert [s["index"] for s in readers] == [0, 1, 2]  # logged in order, whatever order they finished
    assert all(s["error"] is None and s["completion_tokens"] > 0 for s in readers)
    writer = result.sessions[0]
    assert all(s["note_tokens"] == writer["memory_note_tokens"] for s in readers)
    assert len(result.episodes) == 1
