"""The protocol's own logic, pinned with a scripted session over real Notes/Docs on SQLite.

The scripted session answers right exactly when the needed fact is in its
context and reflects by writing that fact, so every number the harness
reports can be predicted here. The real model runs in test_end_to_end.py.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from lifelong.errors import ConfigError
from lifelong.learn.protocol import (
    Protocol,
    ProtocolConfig,
    derive_seed,
    read_jsonl,
    reader_task,
    writer_task,
)
from lifelong.learn.strategies import (
    NAMESPACE,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)
from lifelong.learn.suites import Suite, load_suite
from lifelong.task import Task

from .scripted import ScriptedLLM, ScriptedSession


def run(tmp_path, strategy="full", suite="onboarding", out="out", factory=ScriptedSession, **cfg):
    config = ProtocolConfig(**{"episodes": 4, "readers": 3, **cfg})
    return Protocol(ScriptedLLM(), load_suite(suite, config.seed), get_strategy(strategy), config,
                    tmp_path / out, session_factory=factory).run()


def without_latency(path):
    return [{k: v for k, v in r.items() if k != "latency_s"} for r in read_jsonl(path)]


def test_config_rejects_bad_probabilities_and_aggregate():
    with pytest.raises(ConfigError, match="sum to 1"):
        ProtocolConfig(p_same=0.5, p_similar=0.5, p_dissimilar=0.5)
    with pytest.raises(ConfigError, match="aggregate"):
        ProtocolConfig(aggregate="max")


def test_relations_follow_configured_probabilities_and_are_seeded():
    suite = load_suite("onboarding", 0)
    config = ProtocolConfig(seed=7)
    family, writer = writer_task(suite, 7, 0)
    draws = [reader_task(suite, config, e, i, family, writer)[0] for e in range(250) for i in range(8)]
    counts = Counter(draws)
    n = len(draws)
    assert 0.005 <= counts["same"] / n <= 0.02
    assert 0.86 <= counts["similar"] / n <= 0.92
    assert 0.08 <= counts["dissimilar"] / n <= 0.13
    again = [reader_task(suite, config, e, i, family, writer)[0] for e in range(250) for i in range(8)]
    assert draws == again
    rel, task = next((r, t) for r, t in (reader_task(suite, config, e, 0, family, writer) for e in range(500))
                     if r == "same")
    assert task is writer
    rel, task = next((r, t) for r, t in (reader_task(suite, config, e, 0, family, writer) for e in range(50))
                     if r == "dissimilar")
    assert task.family == "dissimilar"


def test_derive_seed_is_stable():
    assert derive_seed(0, 1, "writer", 0) == derive_seed(0, 1, "writer", 0)
    assert derive_seed(0, 1, "writer", 0) != derive_seed(0, 1, "reader", 0)
    assert 0 <= derive_seed("x") < 2**31


def test_episode_records_reward_terms_and_memory_snapshots(tmp_path):
    result = run(tmp_path, "full", episodes=5, readers=4, note_penalty=0.01, context_penalty=0.001,
                 doc_penalty=0.002)
    episodes = result.episodes
    assert [e["episode"] for e in episodes] == list(range(5))
    for e in episodes:
        readers = [s for s in result.sessions if s["episode"] == e["episode"] and s["role"] == "reader"]
        assert len(readers) == 4
        mean = sum(s["score"] for s in readers) / 4
        assert e["reader_score"] == pytest.approx(mean)
        ctx = sum(s["context_tokens"] for s in readers) / 4
        assert e["context_tokens"] == pytest.approx(ctx)
        assert e["note_penalty"] == pytest.approx(0.01 * e["note_tokens"])
        assert e["context_penalty"] == pytest.approx(0.001 * ctx)
        assert e["doc_penalty"] == pytest.approx(0.002 * e["doc_tokens"])
        assert e["reward"] == pytest.approx(mean - e["note_penalty"] - e["context_penalty"] - e["doc_penalty"])
        assert {s["note_tokens"] for s in readers} == {e["note_tokens"]}
    # Each episode's writer added one fact (unless already known): memory grows monotonically.
    sizes = [e["note_tokens"] for e in episodes]
    assert sizes == sorted(sizes) and sizes[0] > 0
    # One snapshot per episode; snapshot k holds exactly the facts of writers 0..k.
    from lifelong.context.notes import Notes
    from lifelong.context.store import open_store

    writers = [s for s in result.sessions if s["role"] == "writer"]
    for k in range(5):
        snap = result.folder / "memory" / f"episode-{k:04d}"
        store = open_store(f"sqlite:///{snap / 'store.db'}")
        try:
            text = Notes(store, NAMESPACE, 10**6, len).render()
        finally:
            store.close()
        for w in writers[: k + 1]:
            assert w["transcript"][-1]["content"] in text
        docs = list((snap / "docs" / NAMESPACE).glob("*.md"))
        assert len(docs) == len({w["docs_written"][0] for w in writers[: k + 1]})


def test_strategies_see_identical_tasks_and_get_their_options(tmp_path):
    ScriptedSession.calls.clear()
    logs = {}
    for name in strategy_names():
        logs[name] = run(tmp_path, name, episodes=3, readers=3).sessions
    ids = {name: [(s["episode"], s["role"], s["index"], s["task_id"], s["relation"]) for s in sess]
           for name, sess in logs.items()}
    assert len({tuple(v) for v in ids.values()}) == 1
    opts = ScriptedSession.calls
    per_run = len(opts) // len(strategy_names())
    by_strategy = dict(zip(strategy_names(), (opts[i * per_run:(i + 1) * per_run]
                                              for i in range(len(strategy_names()))), strict=True))
    for name, calls in by_strategy.items():
        strat = get_strategy(name)
        writer_opts = calls[0][1]
        reader_opts = [o for _, o in calls[1:4]]
        assert writer_opts["reflect"] == strat.reflects
        assert writer_opts["note_ops"] == strat.note_ops
        assert all(o["reflect"] is False for o in reader_opts)
        assert all(o["use_docs"] == strat.docs for o in [writer_opts, *reader_opts])
        assert len({o["seed"] for o in [writer_opts, *reader_opts]}) == 4
    assert by_strategy["add-only"][0][1]["note_ops"] == frozenset({"add"})
    # Transcript: readers see the writer's transcript; the next writer sees the last one.
    tr = by_strategy["transcript"]
    first_writer_answer = logs["transcript"][0]["transcript"][-1]["content"]
    assert first_writer_answer in tr[1][1]["preamble"]
    assert tr[0][1]["preamble"] is None and first_writer_answer in tr[4][1]["preamble"]
    assert all(o["preamble"] is None for _, o in by_strategy["full"])


def test_memory_helps_similar_tasks_with_the_scripted_session(tmp_path):
    none = run(tmp_path, "none", episodes=8, readers=4)
    full = run(tmp_path, "full", episodes=8, readers=4)
    add_only = run(tmp_path, "add-only", episodes=8, readers=4)

    def similar(result):
        scores = [s["score"] for s in result.sessions if s["relation"] == "similar"]
        return sum(scores) / len(scores)

    assert similar(none) < similar(add_only) <= similar(full)
    assert all(e["note_tokens"] == 0 for e in none.episodes)
    readers = [s for s in full.sessions if s["role"] == "reader"]
    assert all(s["score"] in (0.0, 1.0) for s in readers)


def test_run_is_byte_for_byte_repeatable_apart_from_latency(tmp_path):
    a = run(tmp_path, "full", out="a", episodes=3, concurrency=1)
    b = run(tmp_path, "full", out="b", episodes=3, concurrency=3)  # readers finish out of order
    assert without_latency(a.folder / "sessions.jsonl") == without_latency(b.folder / "sessions.jsonl")
    strip = [json.dumps(r, sort_keys=True) for r in without_latency(a.folder / "sessions.jsonl")]
    assert len(strip) == 1 + 3 * (1 + 3 + 1)


class CountingSession(ScriptedSession):
    runs: list = []

    def run(self, task):
        CountingSession.runs.append(task.id)
        return super().run(task)


def test_interrupted_run_resumes_without_redoing_sessions(tmp_path):
    full = run(tmp_path, "full", out="whole", episodes=4)
    # Interrupt in the middle of episode 2: keep the header, episodes 0-1, episode 2's writer + 1 reader.
    part_dir = tmp_path / "part"
    run(tmp_path, "full", out="part", episodes=4)
    log = part_dir / "full" / "sessions.jsonl"
    lines = log.read_text().splitlines()
    keep = 1 + 2 * 5 + 2
    log.write_text("\n".join(lines[:keep]) + "\n")
    # The memory folder holds a later state than the log (the crash came after more writes).
    for snap in ("episode-0003",):
        import shutil

        shutil.rmtree(part_dir / "full" / "memory" / snap)
    CountingSession.runs.clear()
    resumed = run(tmp_path, "full", out="part", episodes=4, factory=CountingSession)
    assert len(CountingSession.runs) == 2 + (1 + 3)  # two readers of episode 2, all of episode 3
    assert without_latency(log) == without_latency(full.folder / "sessions.jsonl")
    assert resumed.episodes == [
        {**e} for e in read_jsonl(full.folder / "sessions.jsonl") if e["type"] == "episode"
    ]


def test_more_episodes_continue_a_finished_run(tmp_path):
    whole = run(tmp_path, "notes", out="whole", episodes=5)
    run(tmp_path, "notes", out="grow", episodes=3)
    CountingSession.runs.clear()
    run(tmp_path, "notes", out="grow", episodes=5, factory=CountingSession)
    assert len(CountingSession.runs) == 2 * 4
    assert without_latency(tmp_path / "grow" / "notes" / "sessions.jsonl") == without_latency(
        whole.folder / "sessions.jsonl")


def test_resume_with_other_settings_is_refused(tmp_path):
    run(tmp_path, "none", out="x", episodes=2, readers=2)
    with pytest.raises(ConfigError, match="other settings.*readers"):
        run(tmp_path, "none", out="x", episodes=2, readers=3)


def test_a_raising_checker_fails_its_session_not_the_run(tmp_path):
    def broken(answer: str) -> float:
        raise KeyError("no such field")

    good = Task("Question: ok?\nAnswer:", check=lambda a: 1.0, family="fam", id="fam/good",
                metadata={"statement": "s", "answer": "x"})
    bad = Task("Question: bad?\nAnswer:", check=broken, family="fam", id="fam/broken-checker")

    class Fixed:
        name = "fam"

        def sample(self, rng: random.Random) -> Task:
            return bad if rng.random() < 0.5 else good

    suite = Suite("fixed", [Fixed()])
    config = ProtocolConfig(episodes=3, readers=4, p_same=0.0, p_similar=1.0, p_dissimilar=0.0)
    result = Protocol(ScriptedLLM(), suite, get_strategy("none"), config, tmp_path,
                      session_factory=ScriptedSession).run()
    failed = [s for s in result.sessions if s["error"]]
    assert failed and all(s["task_id"] == "fam/broken-checker" and s["score"] is None for s in failed)
    assert all("KeyError" in s["error"] for s in failed)
    assert len(result.episodes) == 3
    for e in result.episodes:
        readers = [s for s in result.sessions if s["episode"] == e["episode"] and s["role"] == "reader"]
        assert e["errors"] == sum(1 for s in readers if s["error"])
        assert e["reader_score"] == pytest.approx(sum(s["score"] or 0.0 for s in readers) / 4)


def test_a_session_raising_a_lifelong_error_is_recorded_with_the_task(tmp_path):
    from lifelong.errors import ContextOverflowError

    class Overflowing(ScriptedSession):
        def run(self, task):
            if task.family == "dissimilar":
                raise ContextOverflowError("prompt of 9000 tokens exceeds the window")
            return super().run(task)

    result = run(tmp_path, "none", episodes=6, readers=4, factory=Overflowing)
    failed = [s for s in result.sessions if s["error"]]
    assert failed and all(s["relation"] == "dissimilar" for s in failed)
    assert all(s["task_id"] in s["error"] and "ContextOverflowError" in s["error"] for s in failed)


def test_a_new_strategy_is_one_small_object(tmp_path, monkeypatch):
    from lifelong.learn import strategies

    monkeypatch.setattr(strategies, "_STRATEGIES", dict(strategies._STRATEGIES))
    register_strategy(Strategy("docs-only", "documentation, no notes", docs=True))
    assert strategy_names()[-1] == "docs-only"
    result = run(tmp_path, "docs-only", episodes=3)
    assert all(e["note_tokens"] == 0 for e in result.episodes)
    assert result.episodes[-1]["doc_tokens"] > 0
