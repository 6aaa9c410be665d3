"""``lifelong mcp`` as an MCP client meets it: the real command in a subprocess
over stdio, driven by the SDK's own client, on a real SQLite file and docs
folder, with the embedded model counting tokens. Each result is checked
against what the store and the workspace then hold, read from this process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from lifelong.context import Docs, Notes, open_store, render_notes, word_count

NAMESPACE = "t"
TOOLS = {"notes_view", "notes_list", "notes_add", "notes_edit", "notes_supersede", "notes_delete",
         "notes_history", "docs_tree", "docs_search", "docs_read", "docs_write", "docs_append",
         "docs_str_replace", "docs_insert", "docs_delete", "docs_rename"}
Script = Callable[[ClientSession], Awaitable[None]]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)  # the model cache and PATH as this process has them
    env["LIFELONG_HOME"] = str(tmp_path / "home")  # nothing falls back on the user's own store
    for name in ("LIFELONG_STORE", "LIFELONG_NAMESPACE", "LIFELONG_DOCS", "LIFELONG_MODEL"):
        env.pop(name, None)
    return env


def _args(url: str, workspace: Path, namespace: str, *extra: str) -> list[str]:
    return ["-m", "lifelong.cli.main", "mcp", "--store", url, "--namespace", namespace,
            "--workspace", str(workspace), "--model", "local", *extra]


def run_client(tmp_path: Path, url: str, workspace: Path, script: Script, *,
               namespace: str = NAMESPACE, extra: tuple[str, ...] = ()) -> None:
    """Start the server as a subprocess, initialize a client session, run ``script``."""
    params = StdioServerParameters(command=sys.executable, env=_env(tmp_path),
                                   args=_args(url, workspace, namespace, *extra))
    errlog_path = tmp_path / "server-stderr.txt"

    async def main() -> None:
        with open(errlog_path, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    await script(session)

    try:
        anyio.run(main)
    except BaseException:
        print(errlog_path.read_text())  # the server's stderr, shown by pytest on failure
        raise


def text(result) -> str:
    return "\n".join(block.text for block in result.content)


async def ok(session: ClientSession, tool: str, **args):
    result = await session.call_tool(tool, args)
    assert not result.is_error, text(result)
    return result


async def error(session: ClientSession, tool: str, **args) -> str:
    result = await session.call_tool(tool, args)
    assert result.is_error, text(result)
    return text(result)


@pytest.fixture
def setup(tmp_path):
    url, workspace = f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "docs"
    store = open_store(url)
    yield url, workspace, store
    store.close()


def _notes(store, namespace: str = NAMESPACE) -> Notes:
    return Notes(store, namespace, 10**9, word_count)  # reads only: the counter is not used


def _snapshot(store, namespace: str = NAMESPACE) -> tuple[list, list]:
    n = _notes(store, namespace)
    return ([(x.id, x.text, x.status, x.tokens) for x in n.list(None)],
            [(e.note_id, e.kind) for e in n.history()])


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def test_notes_tools_write_what_the_store_then_holds(tmp_path, setup, local_llm):
    url, workspace, store = setup
    vpn = "Deploys need the VPN on."

    async def script(s: ClientSession) -> None:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(t.description for t in tools.values())
        assert tools["notes_view"].annotations.read_only_hint
        assert not tools["notes_add"].annotations.read_only_hint

        a = (await ok(s, "notes_add", text=vpn, tags=["deploy"])).structured_content["note"]
        stored = _notes(store).get(a["id"])
        assert (stored.text, stored.tags, stored.status) == (vpn, ["deploy"], "active")
        assert stored.tokens == a["tokens"] == local_llm.count_tokens(vpn)
        b = await ok(s, "notes_add", text="Tests run with make test, never bare pytest.")
        b = b.structured_content["note"]["id"]

        dup = await ok(s, "notes_add", text="deploys need the vpn on")
        assert (dup.structured_content["created"], dup.structured_content["duplicate"]) \
            == (False, "exact")
        assert f"duplicate of note {a['id']}" in text(dup)
        assert len(_notes(store).list()) == 2

        view = (await ok(s, "notes_view"))
        block = _notes(store).render()
        assert view.structured_content["block"] == block and text(view).startswith(block)
        assert view.structured_content["tokens"] == local_llm.count_tokens(block)
        # The default budget: the model's 8192-token window less half of it for the task.
        assert view.structured_content["budget_tokens"] == 4096

        await ok(s, "notes_edit", note_id=a["id"], old_text="the VPN", new_text="the office VPN")
        assert _notes(store).get(a["id"]).text == "Deploys need the office VPN on."

        merged = await ok(s, "notes_supersede", note_ids=[b], text="Run tests with make test.")
        new_id = merged.structured_content["note"]["id"]
        old = _notes(store).get(b)
        assert (old.status, old.superseded_by) == ("superseded", new_id)

        await ok(s, "notes_delete", note_id=a["id"], reason="the VPN is gone")
        assert _notes(store).get(a["id"]).status == "deleted"
        assert [n.id for n in _notes(store).list()] == [new_id]
        assert "office VPN" not in text(await ok(s, "notes_view"))
        deleted = (await ok(s, "notes_list", status="deleted")).structured_content["notes"]
        assert [n["id"] for n in deleted] == [a["id"]]

        history = (await ok(s, "notes_history", note_id=a["id"])).structured_content["history"]
        assert [e["kind"] for e in history] == ["add", "duplicate", "edit", "delete"]
        assert [e["kind"] for e in history] == [e.kind for e in _notes(store).history(a["id"])]
        assert history[2]["old_text"] == vpn

        # Bad input: an error result that names the problem; nothing stored changes.
        before = _snapshot(store)
        assert "cannot be empty" in await error(s, "notes_add", text="   ")
        assert "limit is 8000" in await error(s, "notes_add", text="word " * 3000)
        assert "occurs 0 times" in await error(s, "notes_edit", note_id=new_id,
                                               old_text="nowhere", new_text="x")
        assert "is deleted" in await error(s, "notes_edit", note_id=a["id"],
                                           old_text="VPN", new_text="x")
        assert "no note 999" in await error(s, "notes_delete", note_id=999)
        assert "status" in await error(s, "notes_list", status="bogus")
        assert _snapshot(store) == before
        # ... and the server still answers.
        view = (await ok(s, "notes_view")).structured_content["block"]
        assert view == render_notes(_notes(store).list())

    run_client(tmp_path, url, workspace, script)


def test_a_write_over_the_budget_is_refused(tmp_path, setup):
    url, workspace, store = setup

    async def script(s: ClientSession) -> None:
        await ok(s, "notes_add", text="The build server is ci-7 in the basement rack.")
        before = _snapshot(store)
        message = await error(s, "notes_add", text="Release notes go to the wiki page named "
                                                   "Releases, under the team space, every Friday.")
        assert "over its budget of 30" in message and "consolidate" in message
        assert _snapshot(store) == before

    run_client(tmp_path, url, workspace, script, extra=("--budget", "30"))


def test_docs_tools_write_what_the_workspace_then_holds(tmp_path, setup, local_llm):
    url, workspace, store = setup
    file = workspace / NAMESPACE / "deploy" / "aws.md"
    body = "# Deploying to AWS\n\n" + "".join(f"Step {i}: run the deploy script for region {i}.\n"
                                             for i in range(60))

    async def script(s: ClientSession) -> None:
        w = await ok(s, "docs_write", path="deploy/aws", text=body, description="How we deploy",
                     tags=["aws"])
        assert w.structured_content["path"] == "deploy/aws.md"
        on_disk = file.read_text()
        assert on_disk.endswith(body) and "description: How we deploy" in on_disk

        tree = (await ok(s, "docs_tree")).structured_content["documents"]
        assert [(d["path"], d["description"]) for d in tree] == [("deploy/aws.md", "How we deploy")]

        # Pages chained by next_offset give back the file exactly, each within max_tokens.
        pages, offset = [], 0
        while True:
            page = await ok(s, "docs_read", path="deploy/aws.md", offset=offset, max_tokens=64)
            p = page.structured_content
            assert p["offset"] == offset and p["tokens"] == local_llm.count_tokens(p["text"]) <= 64
            assert text(page).startswith(p["text"])
            pages.append(p["text"])
            if not p["more"]:
                assert "end of document" in text(page)
                break
            assert f"offset={p['next_offset']}" in text(page)
            offset = p["next_offset"]
        assert len(pages) > 3 and "".join(pages) == on_disk

        hits = (await ok(s, "docs_search", query="region deploy")).structured_content["hits"]
        assert [h["path"] for h in hits] == ["deploy/aws.md"]
        assert (await ok(s, "docs_search", query="kubernetes")).structured_content["hits"] == []

        await ok(s, "docs_str_replace", path="deploy/aws.md", old_text="region 7.",
                 new_text="region seven.")
        await ok(s, "docs_append", path="deploy/aws.md", text="Then check the dashboard.\n")
        on_disk = file.read_text()
        assert "region seven." in on_disk and on_disk.endswith("Then check the dashboard.\n")
        versions = Docs(store, NAMESPACE, workspace, word_count).history("deploy/aws.md")
        assert [v.change for v in versions] == ["str_replace", "append"]

        # Bad input: an error result that names the problem; no file, no index entry changes.
        files = _files(tmp_path)
        with store.session(NAMESPACE) as tx:
            index = tx.doc_stamps()
        assert "'..'" in await error(s, "docs_write", path="../outside.md", text="x")
        assert "absolute path" in await error(s, "docs_write", path=str(tmp_path / "abs.md"),
                                              text="x")
        assert "'..'" in await error(s, "docs_read", path="deploy/../../x.md")
        assert "occurs 60 times" in await error(s, "docs_str_replace", path="deploy/aws.md",
                                                old_text="Step", new_text="Stage")
        assert "no document" in await error(s, "docs_append", path="missing.md", text="x")
        assert "front matter" in await error(s, "docs_write", path="bad.md",
                                             text="---\ntags: 3\n---\nbody")
        assert _files(tmp_path) == files
        with store.session(NAMESPACE) as tx:
            assert tx.doc_stamps() == index

    run_client(tmp_path, url, workspace, script)


def test_another_namespace_is_invisible_and_untouchable(tmp_path, setup):
    url, workspace, store = setup
    other = Notes(store, "other", 10**9, word_count, create=True)
    secret = other.add("The other team's deploy key lives in vault path secret/zebra.").note
    Docs(store, "other", workspace, word_count).write("keys.md", "Zebra keys rotate monthly.")
    before = _snapshot(store, "other"), _files(workspace / "other")

    async def script(s: ClientSession) -> None:
        assert (await ok(s, "notes_view")).structured_content["block"] == ""
        assert (await ok(s, "notes_list", status="all")).structured_content["notes"] == []
        assert (await ok(s, "notes_history")).structured_content["history"] == []
        not_here = f"no note {secret.id} in namespace 't'"
        assert not_here in await error(s, "notes_history", note_id=secret.id)
        assert not_here in await error(s, "notes_delete", note_id=secret.id)
        assert not_here in await error(s, "notes_edit", note_id=secret.id, old_text="zebra",
                                       new_text="lion")
        assert not_here in await error(s, "notes_supersede", note_ids=[secret.id], text="mine")
        assert (await ok(s, "docs_tree")).structured_content["documents"] == []
        assert (await ok(s, "docs_search", query="zebra")).structured_content["hits"] == []
        assert "no document 'keys.md'" in await error(s, "docs_read", path="keys.md")
        assert "'..'" in await error(s, "docs_read", path="../other/keys.md")
        # Its own writes land in its own namespace only.
        await ok(s, "notes_add", text="Zebra is the staging cluster.")
        await ok(s, "docs_write", path="keys.md", text="Our keys are in the team vault.")

    run_client(tmp_path, url, workspace, script)
    assert (_snapshot(store, "other"), _files(workspace / "other")) == before
    assert [n.text for n in _notes(store).list()] == ["Zebra is the staging cluster."]
    assert "team vault" in (workspace / NAMESPACE / "keys.md").read_text()


def test_no_create_refuses_an_unknown_namespace(tmp_path, setup):
    url, workspace, store = setup
    proc = subprocess.run([sys.executable, *_args(url, workspace, "nobody", "--no-create")],
                          env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "unknown namespace 'nobody'" in proc.stderr and "--no-create" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nobody" not in store.namespaces()
