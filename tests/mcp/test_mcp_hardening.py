"""Over MCP, bad input from the client's model gets the same clear message and
hint as on the CLI -- never an empty "Error executing tool X" -- and the
server goes on. In process: the tool functions the SDK calls, without stdio."""

from __future__ import annotations

import os

import anyio
import pytest
from mcp.server.mcpserver.exceptions import ToolError

from lifelong.context import Docs, Notes, open_store, word_count
from lifelong.serve.mcp import build_server


@pytest.fixture
def server(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    notes = Notes(store, "t", 1000, word_count, create=True)
    docs = Docs(store, "t", tmp_path / "docs", word_count, create=True)
    yield build_server(notes, docs), notes, docs
    store.close()


def call(server, tool: str, **args):
    return anyio.run(server.call_tool, tool, args)


def refused(server, tool: str, **args) -> str:
    with pytest.raises(ToolError) as err:
        call(server, tool, **args)
    return str(err.value)


def test_bad_input_comes_back_with_its_message_and_hint(server):
    srv, notes, docs = server
    docs.write("plain.md", "a document")
    with open(os.fsencode(docs.folder) + b"/x\xff.md", "wb") as fh:
        fh.write(b"a file whose name is not UTF-8")
    assert "plain.md" in call(srv, "docs_tree").content[0].text
    assert "plain.md" in call(srv, "docs_search", query="document").content[0].text
    msg = refused(srv, "docs_read", path=".")
    assert "names a folder, not a document" in msg and "What to do: e.g. deploy/aws.md" in msg
    assert "no document 'plain.md/x.md'" in refused(srv, "docs_read", path="plain.md/x.md")
    assert "longer than 255 bytes" in refused(srv, "docs_write", path="a" * 300, text="x")
    assert "no note 99999999999999999999" in refused(srv, "notes_delete", note_id=99999999999999999999)
    assert "NUL" in refused(srv, "notes_add", text="a\x00b")
    assert "control or invisible" in refused(srv, "docs_write", path="a\nb.md", text="x")
    assert [d.path for d in docs.tree()] == ["plain.md"] and notes.list() == []


def test_an_unexpected_error_says_what_failed(server, monkeypatch):
    srv, notes, docs = server
    monkeypatch.setattr(Docs, "tree", lambda self: 1 / 0)
    msg = refused(srv, "docs_tree")
    assert "docs_tree failed: ZeroDivisionError: division by zero" in msg and "bug" in msg
    call(srv, "notes_add", text="the server still works")
    assert [n.text for n in notes.list()] == ["the server still works"]
