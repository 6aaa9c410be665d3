"""The OpenAI-compatible client against a real llama.cpp server on loopback."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest

from lifelong.errors import ContextOverflowError, ModelError
from lifelong.llm import load_llm


@pytest.fixture(scope="module")
def remote(llm_server):
    llm = load_llm(f"openai:{llm_server}/v1#gemma")
    yield llm
    llm.close()


def test_plain_completion(remote, local_llm):
    c = remote.complete("The capital of France is", max_tokens=8, seed=1)
    assert c.completion_tokens == 8 and c.text.strip()
    # Same model, same greedy decoding: the server and the in-process backend agree.
    assert c.text == local_llm.complete("The capital of France is", max_tokens=8, seed=1).text


def test_chat_completion(remote):
    c = remote.complete([{"role": "user", "content": "Name a fruit."}], max_tokens=6, seed=0)
    assert c.prompt_tokens > 3 and 1 <= c.completion_tokens <= 6


def test_token_counts_and_window_come_from_the_server(remote, local_llm):
    text = "Lighthouse keepers trimmed the lamps every evening."
    assert remote.count_tokens(text) == local_llm.count_tokens(text)
    assert remote.context_window == 4096


def test_prompt_over_the_window(remote):
    with pytest.raises(ContextOverflowError):
        remote.complete("word " * 5000, max_tokens=2)


def test_unreachable_server_is_a_clear_error():
    llm = load_llm("openai:http://127.0.0.1:9/v1#gemma?retries=1&backoff=0.01&ctx=100")
    with pytest.raises(ModelError) as exc:
        llm.complete("hi", max_tokens=2)
    assert "cannot reach" in str(exc.value) and "lifelong llm serve" in exc.value.hint


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429 / 503 a set number of times, then relays to the real server."""

    upstream = ""
    failures: list[int] = []
    seen: list[str] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.headers.get("Authorization", ""))
        if type(self).failures:
            code = type(self).failures.pop(0)
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy"}}')
            return
        r = httpx.post(self.upstream + self.path, content=body,
                       headers={"Content-Type": "application/json"}, timeout=120)
        self.send_response(r.status_code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(r.content)

    def log_message(self, *args):
        pass


def test_retries_with_backoff_on_429_and_5xx(llm_server, monkeypatch):
    monkeypatch.setenv("LIFELONG_API_KEY", "sk-test-key")
    _Flaky.upstream, _Flaky.failures, _Flaky.seen = llm_server, [429, 503, 502], []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1#gemma?backoff=0.01&ctx=4096"
        llm = load_llm(f"openai:{url}")
        c = llm.complete("The sky is", max_tokens=3, seed=0)
        assert c.completion_tokens == 3
        assert len(_Flaky.seen) == 4  # three refusals, then the answer
        assert set(_Flaky.seen) == {"Bearer sk-test-key"}
        _Flaky.failures = [503] * 5
        llm2 = load_llm(f"openai:{url.replace('backoff=0.01', 'backoff=0.01&retries=2')}")
        with pytest.raises(ModelError) as exc:
            llm2.complete("The sky is", max_tokens=3)
        assert "503" in str(exc.value)
    finally:
        proxy.shutdown()
