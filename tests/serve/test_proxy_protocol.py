"""The proxy's own protocol, pinned down against a scripted upstream (a model
that says what the test scripts, served over real HTTP on loopback): the docs
tool loop, the client's own tools, errors, and the end of a conversation."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.serve.proxy import CONVERSATION_HEADER, END_HEADER, MemoryProxy, ProxyConfig
from tests.llm.conftest import free_port
from tests.session.conftest import ScriptedLLM

uvicorn = pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")


@contextmanager
def serving(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Upstream:
    """An OpenAI-compatible chat endpoint whose replies are scripted; it keeps every request."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        self.app = fastapi.FastAPI()

        @self.app.post("/v1/chat/completions")
        def chat(body: dict = fastapi.Body(...)):  # noqa: B008
            self.requests.append(body)
            message = self.replies.pop(0)
            return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                 "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}


def call(name, **arguments):
    return {"id": f"call-{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


@pytest.fixture
def memory(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    notes = Notes(store, "acme", 1000, word_count, create=True)
    docs = Docs(store, "acme", tmp_path / "docs", word_count, create=True)
    notes.add("Deploys need the VPN.")
    docs.write("deploy.md", "# Deploy\n\nRun make release, then tag it.\n", description="How we deploy")
    yield notes, docs
    store.close()


def test_the_docs_tools_are_answered_by_the_proxy(memory):
    notes, docs = memory
    upstream = Upstream([{"content": "", "tool_calls": [call("lifelong_docs_search", query="deploy")]},
                         {"content": "", "tool_calls": [call("lifelong_docs_read", path="deploy.md")]},
                         {"content": "Run make release, then tag it."}])
    with serving(upstream.app) as up:
        proxy = MemoryProxy(notes, docs, ProxyConfig(upstream=f"{up}/v1", reflect=False))
        with serving(proxy.app) as base:
            r = httpx.post(f"{base}/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "How do we deploy?"}]})
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == "Run make release, then tag it."
    assert body["usage"] == {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}  # all three calls
    first = upstream.requests[0]
    system = first["messages"][0]
    assert system["role"] == "system" and system["content"].endswith("\n\nBe brief.")  # merged, not added
    assert "- [1] Deploys need the VPN." in system["content"] and "- deploy.md: How we deploy" in system["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {"lifelong_docs_search", "lifelong_docs_read"}
    tool_results = [m for m in upstream.requests[2]["messages"] if m["role"] == "tool"]
    assert tool_results[0]["content"].startswith("- deploy.md:")
    assert "Run make release, then tag it." in tool_results[1]["content"]


def test_the_clients_own_tools_come_back_to_it_without_ours(memory):
    notes, docs = memory
    mine = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    upstream = Upstream([{"content": "", "tool_calls": [call("get_weather", city="Lyon"),
                                                        call("lifelong_docs_search", query="x")]}])
    with serving(upstream.app) as up:
        proxy = MemoryProxy(notes, docs, ProxyConfig(upstream=f"{up}/v1", reflect=False))
        with serving(proxy.app) as base:
            body = httpx.post(f"{base}/v1/chat/completions", json={
                "model": "m", "tools": [mine], "messages": [{"role": "user", "content": "Weather?"}]}).json()
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]][0] == "get_weather"


def test_bad_requests_and_an_unreachable_upstream_are_openai_style_errors(memory):
    notes, docs = memory
    proxy = MemoryProxy(notes, docs, ProxyConfig(upstream=f"http://127.0.0.1:{free_port()}/v1", reflect=False))
    with serving(proxy.app) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 400 and "'messages' must be a non-empty list" in r.json()["error"]["message"]
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user",
                                                                                         "content": "hi"}]})
        assert r.status_code == 502 and "cannot reach the upstream" in r.json()["error"]["message"]


def test_a_conversation_ends_by_header_endpoint_idle_time_or_exit(memory):
    notes, docs = memory
    replies = [{"content": "Noted."}] * 4
    # The reflecting model: a note, then a documentation entry, per conversation.
    reflections = ScriptedLLM(["Releases are tagged after make release.", "We talked about releases.",
                               "The staging server listens on port 9443.", "Second talk.",
                               "NONE", "Third talk.", "NONE", "Fourth talk."])
    upstream = Upstream(replies)
    with serving(upstream.app) as up:
        proxy = MemoryProxy(notes, docs, ProxyConfig(upstream=f"{up}/v1", idle_end_s=0.5, docs_tools=False),
                            reflections)
        with serving(proxy.app) as base:
            def ask(text, **headers):
                r = httpx.post(f"{base}/v1/chat/completions", headers=headers, json={
                    "model": "m", "messages": [{"role": "user", "content": text}]})
                return r.headers[CONVERSATION_HEADER]

            a = ask("We tag releases after make release.", **{END_HEADER: "true"})
            deadline = time.time() + 30
            while not any(e.get("id") == a and "notes_written" in e
                          for e in httpx.get(f"{base}/v1/conversations").json()["ended"]):
                assert time.time() < deadline
                time.sleep(0.05)
            ended = httpx.post(f"{base}/v1/conversations/{a}/end").json()
            assert ended["notes_written"] == ["Releases are tagged after make release."]
            b = ask("Where is staging?", **{CONVERSATION_HEADER: "b"})
            assert b == "b"
            out = httpx.post(f"{base}/v1/conversations/b/end").json()
            assert out["notes_written"] == [] and "repeats the prompt's example" in out["warnings"][0]
            c = ask("Anything else?")
            time.sleep(2.0)  # idle_end_s = 0.5: the reaper ends it
            assert c in [e["id"] for e in httpx.get(f"{base}/v1/conversations").json()["ended"]]
            ask("One more thing.", **{CONVERSATION_HEADER: "d"})
        # leaving the server ended "d" too
    assert docs.read("acme.md", max_tokens=10_000).text.count("## Session ") == 4
    assert [n.text for n in notes.list()] == ["Deploys need the VPN.", "Releases are tagged after make release."]
