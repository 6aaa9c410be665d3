"""No output of any command holds a configured secret. A loopback HTTP server
stands in for an OpenAI-compatible upstream that echoes the request -- its
headers, Authorization included -- back in its error bodies, the way some
proxies and debug servers do; the API key, a password in the model URL and a
password in the store URL must appear in no stdout, stderr or tool error."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

API_KEY = "sk-lifelong-test-SECRET-4242424242"
URL_PASSWORD = "url-pw-SECRET-7"
PG_PASSWORD = "p@ss/pg-SECRET:9"
# An HTTP client sends a URL's user and password as "Basic base64(user:password)".
BASIC = base64.b64encode(f"alice:{URL_PASSWORD}".encode()).decode()
SECRETS = (API_KEY, URL_PASSWORD, "SECRET", BASIC)


class Echo(BaseHTTPRequestHandler):
    """Answers every request with the status its path asks for (/s401/…), and a
    body that repeats the request: method, path, every header, the body."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        status = int(self.path.split("/")[1][1:]) if self.path.startswith("/s") else 200
        echo = f"{self.command} {self.path}\n{self.headers}\n{body}"
        if "/raw/" in self.path:  # not JSON: the text itself is the error
            data, kind = echo.encode(), "text/plain"
        else:
            data = json.dumps({"error": {"message": echo, "headers": dict(self.headers)}}).encode()
            kind = "application/json"
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def spec(host: str, status: int, raw: bool = False, password: bool = True) -> str:
    """A model spec for the echo server; with ``password`` the URL carries one (and
    the client sends it as Basic auth), without it the API key goes as a Bearer token."""
    path = f"s{status}/raw/v1" if raw else f"s{status}/v1"
    userinfo = f"alice:{URL_PASSWORD}@" if password else ""
    return f"openai:http://{userinfo}{host}/{path}#m?retries=0&ctx=2048"


def test_redaction_of_urls_and_text():
    from lifelong.redact import redact, redact_url

    assert redact_url(f"postgresql://bob:{PG_PASSWORD}@db.example:5432/mem") == \
        "postgresql://bob:***@db.example:5432/mem"
    assert redact_url("postgresql://bob@db/mem?sslmode=require&password=hunter22") == \
        "postgresql://bob@db/mem?sslmode=require&password=***"
    assert redact_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    os.environ["LIFELONG_API_KEY"] = API_KEY
    try:
        assert redact(f"echo: Authorization: Bearer {API_KEY}") == "echo: Authorization: ***"
        assert redact(f'{{"authorization": "Bearer {API_KEY}"}}') == '{"authorization": "***"}'
        assert API_KEY not in redact(f"key={API_KEY[::1]} in a sentence")
        assert redact("a 1024-token window, the token budget") == "a 1024-token window, the token budget"
    finally:
        del os.environ["LIFELONG_API_KEY"]


@pytest.fixture
def cli_with_secrets(tmp_path, monkeypatch, capsys):
    from lifelong.cli.main import main

    monkeypatch.setenv("LIFELONG_API_KEY", API_KEY)
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFELONG_STORE", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("LIFELONG_DOCS", str(tmp_path / "docs"))

    def run(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        assert exit_.value.code in (0, 1), out + err
        return out + err

    return run


def test_no_command_prints_a_secret(cli_with_secrets, echo_server):
    cli = cli_with_secrets
    outputs = {}
    for status in (400, 401, 403, 500):
        for raw in (False, True):
            for password in (False, True):
                s = spec(echo_server, status, raw, password)
                outputs[f"complete {status} {raw} {password}"] = cli("llm", "complete", "hello", "-m", s)
    s = spec(echo_server, 401)
    outputs["tokens"] = cli("llm", "tokens", "hello", "-m", s)
    outputs["notes add"] = cli("notes", "add", "a note", "-m", s)
    outputs["run"] = cli("run", "a task", "-m", s, "--note-budget", "100")
    outputs["bad option"] = cli("llm", "complete", "x", "-m", s.replace("retries=0", "bogus=1"))
    outputs["no model"] = cli("llm", "complete", "x", "-m", f"openai:http://alice:{URL_PASSWORD}@{echo_server}/v1")
    outputs["store"] = cli("notes", "list", "--store", f"postgresql://bob:{PG_PASSWORD}@127.0.0.1:1/db")
    outputs["store query"] = cli("notes", "list", "--store",
                                 "postgresql://bob@127.0.0.1:1/db?password=pg-SECRET-2&connect_timeout=2")
    # the server did get the key, and echoed it: the errors are real and say what happened
    said = " ".join(outputs["complete 401 False False"].split())
    assert "refused the API key (401)" in said and "Authorization: ***" in said
    assert "answered 500" in " ".join(outputs["complete 500 True True"].split())
    assert "store URL postgresql://bob:***@127.0.0.1:1/db has '@' or '/'" in " ".join(outputs["store"].split())
    assert "cannot connect to postgresql://bob@127.0.0.1:1/db?password=***" in " ".join(
        outputs["store query"].split())
    for name, out in outputs.items():
        for secret in SECRETS + ("pg-SECRET", "p@ss"):
            assert secret not in out, (name, out)


def test_the_library_error_itself_holds_no_secret(echo_server, monkeypatch):
    """Programs that print str(error) go through no CLI printer: the error must be clean."""
    from lifelong.errors import ModelError
    from lifelong.llm import load_llm

    monkeypatch.setenv("LIFELONG_API_KEY", API_KEY)
    for status in (400, 401, 500):
        for password in (False, True):
            llm = load_llm(spec(echo_server, status, password=password))
            with pytest.raises(ModelError) as err:
                llm.complete("hello", max_tokens=4)
            assert "Authorization: ***" in str(err.value)
            assert not any(s in str(err.value) + repr(llm) for s in SECRETS), str(err.value)


def test_a_real_process_prints_no_secret(tmp_path, echo_server):
    env = {**os.environ, "LIFELONG_API_KEY": API_KEY, "LIFELONG_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lifelong.cli.main", "llm", "complete", "hi",
                           "-m", spec(echo_server, 401, password=False)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "refused the API key" in " ".join(proc.stderr.split())
    assert not any(s in proc.stdout + proc.stderr for s in SECRETS) and "Traceback" not in proc.stderr


def test_mcp_tool_errors_hold_no_secret(tmp_path, monkeypatch):
    """Whatever a tool's error quotes -- an upstream's echo in a LifelongError, or
    the text of an unexpected exception -- the client never sees the key."""
    from mcp.server.mcpserver.exceptions import ToolError

    from lifelong.context import Docs, Notes, open_store, word_count
    from lifelong.errors import ModelError
    from lifelong.serve.mcp import build_server

    monkeypatch.setenv("LIFELONG_API_KEY", API_KEY)
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    for raised in (ModelError(f"upstream said: Authorization: Bearer {API_KEY}", hint=f"key {API_KEY}"),
                   RuntimeError(f"connection to http://alice:{URL_PASSWORD}@host failed, key {API_KEY}")):
        def count(text: str, raised=raised) -> int:
            raise raised

        notes = Notes(store, "t", 1000, count, create=True)
        docs = Docs(store, "t", tmp_path / "docs", word_count, create=True)
        with pytest.raises(ToolError) as err:
            anyio.run(build_server(notes, docs).call_tool, "notes_add", {"text": "a note"})
        message = str(err.value)
        assert ("upstream said" in message) or ("RuntimeError" in message), message
        assert not any(s in message for s in SECRETS), message
    store.close()
