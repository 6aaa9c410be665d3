"""``lifelong mcp`` started the way the README says (``python -m lifelong``), over
streamable HTTP as well as stdio; it answers before the model has loaded; and
an argument a client's model got wrong comes back as a sentence, not a dump."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from lifelong.context import Docs, Notes, open_store, word_count
from tests.llm.conftest import free_port

from .test_mcp_server import _env, error, ok


def _serve_http(tmp_path, url, workspace, *extra):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong", "mcp", "--transport", "http", "--port", str(port),
         "--store", url, "--namespace", "t", "--workspace", str(workspace), "--model", "local", *extra],
        env=_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    endpoint = f"http://127.0.0.1:{port}/mcp"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode(errors="replace"))
        try:
            httpx.get(endpoint, timeout=1)
            return proc, endpoint
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the MCP server did not listen within 120 s")


def test_streamable_http_serves_the_same_tools(tmp_path, local_llm):
    url, workspace = f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "docs"
    proc, endpoint = _serve_http(tmp_path, url, workspace)

    async def main() -> None:
        async with streamable_http_client(endpoint) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                assert {"notes_add", "docs_insert", "docs_delete", "docs_rename"} <= names
                added = await ok(s, "notes_add", text="Deploys need the VPN on.")
                assert added.structured_content["note"]["tokens"] == local_llm.count_tokens(
                    "Deploys need the VPN on.")
                await ok(s, "docs_write", path="ops.md", text="# Ops\n\nRun make release.\n")
                await ok(s, "docs_insert", path="ops.md", line=_last_line(workspace), text="Then tag it.")
                await ok(s, "docs_rename", path="ops.md", new_path="ship/ops.md")
                assert "already exists" in await error(s, "docs_rename", path="ship/ops.md",
                                                       new_path="ship/ops.md")

    try:
        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with open_store(url) as store:
        assert [n.text for n in Notes(store, "t", 10**9, word_count).list()] == ["Deploys need the VPN on."]
        docs = Docs(store, "t", workspace, word_count)
        assert docs.read("ship/ops.md").text.endswith("Run make release.\nThen tag it.\n")
        assert not docs.exists("ops.md")


def _last_line(workspace) -> int:
    return (workspace / "t" / "ops.md").read_text().count("\n")


def test_a_taken_port_is_named(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "lifelong", "mcp", "--transport", "http", "--port",
                               str(port), "--store", f"sqlite:///{tmp_path / 'x.db'}", "-n", "t",
                               "--note-budget", "100"],
                              env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"port {port} on 127.0.0.1 is taken" in " ".join(proc.stderr.split())


def test_it_answers_before_the_model_loads_and_explains_bad_arguments(tmp_path):
    """The model is a GGUF file that does not exist: the server still starts and
    answers everything that counts no tokens; the first call that counts says
    what is wrong with the model. Nothing loads a model to start."""
    url, workspace = f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "docs"
    params = StdioServerParameters(
        command=sys.executable, env=_env(tmp_path),
        args=["-m", "lifelong", "mcp", "--store", url, "-n", "t", "--workspace", str(workspace),
              "--model", f"llamacpp:{tmp_path / 'missing.gguf'}?ctx=2048"])

    async def main() -> None:
        with open(tmp_path / "stderr.txt", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    assert len((await s.list_tools()).tools) == 16
                    assert "budget of 1024 tokens" in (await s.initialize()).instructions  # 2048 / 2
                    assert (await ok(s, "notes_list")).structured_content["notes"] == []
                    assert (await ok(s, "docs_tree")).structured_content["documents"] == []
                    assert "model file not found" in await error(s, "notes_add", text="x y z")

                    # Argument mistakes, explained.
                    msg = await error(s, "docs_read", pth="ops.md")
                    assert msg.endswith("docs_read: unknown argument 'pth' (did you mean 'path'?); missing "
                                        "argument 'path'. Its arguments: path (string, required), offset "
                                        "(integer), max_tokens (integer).")
                    msg = await error(s, "docs_read", path="ops.md", offset="soon")
                    assert "offset: input should be a valid integer" in msg and "(got 'soon')" in msg
                    assert "errors.pydantic.dev" not in msg and "validation error" not in msg.lower()
                    assert "unknown tool 'notes_erase'" in await error(s, "notes_erase", note_id=1)

    anyio.run(main)
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_python_dash_m_lifelong_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "lifelong", "mcp", "--help"], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "80"}, timeout=60)
    assert proc.returncode == 0 and "--transport" in proc.stdout
