"""What an OpenAI-compatible server answers is untrusted input too: a body that
is not JSON, JSON of another shape, a reply holding a lone surrogate. Each is
a ModelError that says what came back (or, for the surrogate, clean text), not
a KeyError from deep inside the client. A loopback server plays the server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifelong.errors import LifelongError, ModelError, ValidationError
from lifelong.llm import load_llm

ANSWERS = {
    "not-json": b"<html>gateway</html>",
    "a-list": b"[1, 2, 3]",
    "no-choices": json.dumps({"usage": {"prompt_tokens": 1}, "choices": []}).encode(),
    "usage-is-a-number": json.dumps({"usage": 5, "choices": [{"text": "x"}]}).encode(),
    "bad-tool-calls": json.dumps({"usage": {"prompt_tokens": 1},
                                  "choices": [{"message": {"tool_calls": ["read"]}}]}).encode(),
    "bad-counts": json.dumps({"usage": {"prompt_tokens": "many"}, "choices": [{"text": "x"}]}).encode(),
    "surrogate": b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1},'
                 b' "choices": [{"text": "caf\\udce9", "message": {"content": "caf\\udce9"}}]}',
}


class Crafted(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        kind = self.path.split("/")[1]
        if self.path.endswith(("/props", "/models")):
            data = json.dumps({"n_ctx": "a lot"}).encode() if kind == "bad-ctx" else b"not json"
        elif self.path.endswith("/tokenize"):
            data = b'{"tokens": 7}' if kind == "bad-tokens" else b"not json"
        else:
            data = ANSWERS.get(kind, b"{}")
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Crafted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("kind", [k for k in ANSWERS if k != "surrogate"])
@pytest.mark.parametrize("chat", [False, True])
def test_answers_of_the_wrong_shape_are_model_errors(host, kind, chat):
    llm = load_llm(f"openai:http://{host}/{kind}/v1#m?retries=0&ctx=2048")
    prompt = [{"role": "user", "content": "hi"}] if chat else "hi"
    if kind == "bad-tool-calls" and not chat:
        assert llm.complete(prompt, max_tokens=4).text == ""  # a plain completion has no tool calls
        return
    with pytest.raises(ModelError, match="cannot read|no usage numbers"):
        llm.complete(prompt, max_tokens=4)


def test_counts_and_window_of_the_wrong_shape_are_model_errors(host):
    with pytest.raises(ModelError, match="cannot read"):
        load_llm(f"openai:http://{host}/bad-tokens/v1#m?retries=0&ctx=2048").count_tokens("hi")
    with pytest.raises(LifelongError):
        load_llm(f"openai:http://{host}/not-json/v1#m?retries=0&ctx=2048").count_tokens("hi")
    with pytest.raises(ModelError, match="cannot read"):
        _ = load_llm(f"openai:http://{host}/bad-ctx/v1#m?retries=0").context_window


def test_a_lone_surrogate_in_a_reply_becomes_a_replacement_character(host):
    llm = load_llm(f"openai:http://{host}/surrogate/v1#m?retries=0&ctx=2048")
    assert llm.complete("hi", max_tokens=4).text == "caf\ufffd"
    assert llm.complete([{"role": "user", "content": "hi"}], max_tokens=4).text == "caf\ufffd"
    # and a prompt that is not UTF-8 is refused before it is sent
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        llm.complete("caf\udce9", max_tokens=4)
