"""The memory proxy as a user runs it: ``lifelong proxy`` in a subprocess in front of
the real llama.cpp OpenAI-compatible server (``lifelong llm serve``), driven by the
official ``openai`` client; what it injects is checked against the upstream's own
answer to the same messages, what it writes against the store. (Ending by idle time is pinned down in
test_proxy_protocol.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from lifelong.context import Docs, Notes, open_store
from lifelong.context.grounding import leaked
from lifelong.context.session import REFLECTION_EXAMPLES
from lifelong.llm import load_llm
from lifelong.serve.proxy import CONVERSATION_HEADER, END_HEADER, MemoryProxy, ProxyConfig
from tests.llm.conftest import free_port, llm_server  # noqa: F401  (the real upstream)

openai = pytest.importorskip("openai")

FACT = "The Blue team's code word is MARIGOLD."
QUESTION = [{"role": "user", "content": "What is the code word of the Blue team?"}]


def _start(tmp_path, upstream, *extra):
    port = free_port()
    env = {**os.environ, "LIFELONG_HOME": str(tmp_path / "home")}
    for name in ("LIFELONG_STORE", "LIFELONG_NAMESPACE", "LIFELONG_DOCS", "LIFELONG_MODEL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong", "proxy", "--upstream", f"{upstream}/v1", "-n", "acme",
         "--store", f"sqlite:///{tmp_path / 'm.db'}", "--workspace", str(tmp_path / "docs"),
         "--port", str(port), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode(errors="replace"))
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the proxy did not start in 120 s")


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=600)  # it reflects on what is still open before it exits
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _memory(tmp_path, upstream):
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    llm = load_llm(f"openai:{upstream}/v1#gemma")
    notes = Notes(store, "acme", 2048, llm.count_tokens, create=True)
    docs = Docs(store, "acme", tmp_path / "docs", llm.count_tokens, create=True)
    return store, llm, notes, docs


def _wait_ended(base, conv_id, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = httpx.get(f"{base}/v1/conversations", timeout=30).json()
        for done in state["ended"]:
            if done.get("id") == conv_id and "notes_written" in done:
                return done
        time.sleep(0.5)
    raise AssertionError(f"conversation {conv_id} did not end: {state}")


@pytest.mark.slow
def test_a_client_gets_the_notes_and_the_conversation_is_reflected_on(tmp_path, llm_server):  # noqa: F811
    store, llm, notes, docs = _memory(tmp_path, llm_server)
    notes.add(FACT)
    proc, base = _start(tmp_path, llm_server, "--idle-end", "0")  # ends by header, endpoint, exit
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=600)
        args = {"model": "gemma", "max_tokens": 16, "temperature": 0, "seed": 0}
        through = client.chat.completions.with_raw_response.create(messages=QUESTION, **args)
        conv_id = through.headers[CONVERSATION_HEADER]
        reply = through.parse()
        # The upstream, asked directly with the notes in front, answers the same, from as many tokens.
        expected = MemoryProxy(notes, docs, ProxyConfig(upstream=f"{llm_server}/v1", reflect=False)).inject(
            QUESTION, with_tools=False)
        assert expected[0]["role"] == "system" and FACT in expected[0]["content"]
        direct = httpx.post(f"{llm_server}/v1/chat/completions", json={**args, "messages": expected},
                            timeout=600).json()
        assert reply.choices[0].message.content == direct["choices"][0]["message"]["content"]
        assert reply.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
        bare = httpx.post(f"{llm_server}/v1/chat/completions", json={**args, "messages": QUESTION},
                          timeout=600).json()
        assert reply.usage.prompt_tokens > bare["usage"]["prompt_tokens"] + llm.count_tokens(FACT)

        # Streaming: the same answer, chunk by chunk, and the same conversation.
        chunks = client.chat.completions.create(messages=QUESTION, stream=True, **args)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            reply.choices[0].message.content
        state = httpx.get(f"{base}/v1/conversations").json()
        assert [c["id"] for c in state["open"]] == [conv_id] and state["open"][0]["turns"] == 2

        # The last turn says so: the proxy answers, then reflects with the upstream model.
        follow = QUESTION + [{"role": "assistant", "content": reply.choices[0].message.content},
                             {"role": "user", "content": "Thanks. Remember: the Red team's code word is TULIP."}]
        client.chat.completions.create(messages=follow, extra_headers={END_HEADER: "true"}, **args)
        ended = _wait_ended(base, conv_id)
        assert ended["turns"] == 4 and ended["docs_written"] == ["acme.md"] and ended["error"] is None
        for text in ended["notes_written"]:  # whatever the 270M model wrote, nothing from the example
            assert not leaked(text, "\n".join(REFLECTION_EXAMPLES), [FACT] + [m["content"] for m in follow])
        assert httpx.post(f"{base}/v1/conversations/{conv_id}/end").json() == ended  # ended once
        assert httpx.post(f"{base}/v1/conversations/nope/end").status_code == 404
        # One still open when the proxy stops is reflected on before it exits.
        client.chat.completions.create(messages=[{"role": "user", "content": "Who leads the Blue team?"}],
                                       extra_headers={CONVERSATION_HEADER: "last-one"}, **args)
    finally:
        code = _stop(proc)
    assert code in (0, -15)  # uvicorn shuts down gracefully, then re-raises SIGTERM

    entries = docs.read("acme.md", max_tokens=100_000).text.count("## Session ")
    assert entries == 2  # the conversation that said it ended, and the one open at exit
    for note in notes.list():
        assert "9443" not in note.text and "staging" not in note.text.lower()
    assert FACT in [n.text for n in notes.list()]  # the right fact is still there
    store.close()
