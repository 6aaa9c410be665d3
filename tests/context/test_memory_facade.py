"""``Memory``: mem0's verbs on notes, scoped per user / agent / run, on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import pytest

from lifelong import Memory as TopLevelMemory
from lifelong.context import Memory, Notes, scope_namespace
from lifelong.context.memory import bm25
from lifelong.errors import NotFoundError, ValidationError
from tests.session.conftest import ScriptedLLM


@pytest.fixture
def memory(store):
    return Memory(store)


def test_the_verbs_on_one_user(memory, store):
    assert TopLevelMemory is Memory
    first = memory.add("Alice prefers tea to coffee.", user_id="alice")["results"][0]
    assert first["event"] == "ADD" and first["memory"] == "Alice prefers tea to coffee."
    assert first["user_id"] == "alice" and first["agent_id"] is None and first["id"] == "user-alice:" + \
        first["id"].split(":")[1]
    again = memory.add("alice prefers tea to coffee", user_id="alice")["results"][0]
    assert again["event"] == "NONE" and again["id"] == first["id"]  # a duplicate is not stored twice
    memory.add([{"role": "user", "content": "I live in Lyon."},
                {"role": "assistant", "content": "Noted: Lyon."}], user_id="alice", infer=False)
    texts = [m["memory"] for m in memory.get_all(user_id="alice")["results"]]
    assert texts == ["Alice prefers tea to coffee.", "I live in Lyon.", "Noted: Lyon."]
    assert memory.get(first["id"])["memory"] == "Alice prefers tea to coffee."

    updated = memory.update(first["id"], "Alice prefers green tea.")
    assert updated["previous_id"] == first["id"] and memory.get(updated["id"])["memory"] == "Alice prefers green tea."
    assert memory.get(first["id"])["status"] == "superseded"  # kept, not lost
    memory.delete(updated["id"])
    assert "Alice prefers green tea." not in [m["memory"] for m in memory.get_all(user_id="alice")["results"]]
    assert [e["event"] for e in memory.history(updated["id"])] == ["ADD", "DELETE"]
    # The scope's memories are a notes block like any other: what a model sees.
    assert memory.notes(user_id="alice").render() == "## Notes\n" + "".join(
        f"- [{m['id'].split(':')[1]}] {m['memory']}\n" for m in memory.get_all(user_id="alice")["results"])
    assert isinstance(memory.notes(user_id="alice"), Notes)


def test_scopes_are_separate_and_filters_match_like_mem0(memory):
    memory.add("Alice is allergic to peanuts.", user_id="alice")
    memory.add("Bob is allergic to shellfish.", user_id="bob")
    memory.add("The support bot answers in French for Alice.", user_id="alice", agent_id="support")
    memory.add("Ticket 42 is about a refund.", user_id="alice", agent_id="support", run_id="t42")
    memory.add("The support bot never promises refunds.", agent_id="support")

    def texts(**scope):
        return {m["memory"] for m in memory.get_all(**scope)["results"]}

    assert texts(user_id="bob") == {"Bob is allergic to shellfish."}
    assert texts(user_id="alice") == {"Alice is allergic to peanuts.", "The support bot answers in French for Alice.",
                                      "Ticket 42 is about a refund."}
    assert texts(agent_id="support") == {"The support bot answers in French for Alice.",
                                         "Ticket 42 is about a refund.", "The support bot never promises refunds."}
    assert texts(run_id="t42") == {"Ticket 42 is about a refund."}
    hits = memory.search("allergic", user_id="alice")["results"]
    assert [h["memory"] for h in hits] == ["Alice is allergic to peanuts."]  # never bob's
    out = memory.delete_all(user_id="alice", agent_id="support")
    assert out["deleted"] == 2 and texts(agent_id="support") == {"The support bot never promises refunds."}
    with pytest.raises(ValidationError, match="needs a scope"):
        memory.delete_all()
    with pytest.raises(ValidationError, match="needs a scope"):
        memory.add("orphan")


def test_ids_of_any_shape_map_to_valid_distinct_namespaces(memory):
    a = scope_namespace(user_id="alice@example.com", agent_id="a.b", run_id="0f8e-99")
    b = scope_namespace(user_id="alice@example.org", agent_id="a.b", run_id="0f8e-99")
    assert a != b and len(a) <= 64 and a.startswith("user-x-")
    assert scope_namespace(user_id="alice") == "user-alice"
    memory.add("Works nights.", user_id="alice@example.com")
    assert [m["memory"] for m in memory.get_all(user_id="alice@example.com")["results"]] == ["Works nights."]
    assert memory.get_all(user_id="alice@example.org")["results"] == []
    with pytest.raises(ValidationError, match="not a memory id"):
        memory.get("42")
    with pytest.raises(NotFoundError):
        memory.get("user-nobody:1")


def test_search_ranks_by_bm25_against_a_reference(memory):
    texts = ["The deploy key rotates monthly.", "Deploys run on Fridays; deploys need the VPN.",
             "Lunch is at noon.", "The VPN password is in the vault."]
    for t in texts:
        memory.add(t, user_id="ops")
    got = memory.search("deploy vpn", user_id="ops")["results"]

    def reference(query, docs, k1=1.5, b=0.75):
        import re

        def terms(s):
            return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                    for w in re.findall(r"\w+", s.lower())]
        tokenized = [terms(d) for d in docs]
        avg = sum(map(len, tokenized)) / len(docs)
        out = []
        for d in tokenized:
            score = 0.0
            for q in set(terms(query)):
                n = sum(q in x for x in tokenized)
                if n:
                    idf = math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
                    tf = d.count(q)
                    score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avg))
            out.append(score)
        return out

    want = reference("deploy vpn", texts)
    assert bm25("deploy vpn", texts) == pytest.approx(want, rel=1e-12)
    order = sorted(range(4), key=lambda i: -want[i])
    assert [h["memory"] for h in got] == [texts[i] for i in order if want[i] > 0]
    assert [h["score"] for h in got] == pytest.approx(sorted((w for w in want if w > 0), reverse=True))
    assert memory.search("lunch", user_id="ops", limit=1)["results"][0]["memory"] == "Lunch is at noon."
    assert memory.search("kubernetes", user_id="ops")["results"] == []


def test_metadata_is_kept_as_tags(memory):
    item = memory.add("Likes jazz.", user_id="alice", metadata={"category": "music"})["results"][0]
    assert item["metadata"] == {"category": "music"}
    with pytest.raises(ValidationError, match="cannot be stored"):
        memory.add("x", user_id="alice", metadata={"a:b": "c"})


def test_infer_lets_the_model_write_the_memory_and_checks_it(store):
    chat = [{"role": "user", "content": "Please book my flights with Lufthansa, I collect their miles."},
            {"role": "assistant", "content": "I will book Lufthansa from now on."}]
    llm = ScriptedLLM(["Alice books flights with Lufthansa for the miles."], name="scripted")
    m = Memory(store, llm=llm)
    added = m.add(chat, user_id="alice")["results"]
    assert [a["memory"] for a in added] == ["Alice books flights with Lufthansa for the miles."]
    assert "Lufthansa, I collect their miles." in llm.prompts[0] and llm.prompts[0].endswith("Note:")
    # A model that parrots the reflection prompt's example writes nothing.
    parrot = Memory(store, llm=ScriptedLLM(["The staging server listens on port 9443."]))
    assert parrot.add(chat, user_id="bob")["results"] == []
    assert parrot.get_all(user_id="bob")["results"] == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_semantic_search_finds_memories_worded_differently(memory):
    for t in ("Alice's dog eats only grain-free kibble.", "The quarterly report is due in March.",
              "Alice drives a blue hatchback."):
        memory.add(t, user_id="alice")
    best = memory.search("what food does the pet have", user_id="alice", semantic=True, limit=1)["results"]
    assert best[0]["memory"] == "Alice's dog eats only grain-free kibble."
    assert memory.search("what food does the pet have", user_id="alice")["results"] == []  # no shared word
