"""The rest of the memory tool's verbs on documents (insert at a line, delete,
rename) and Claude's memory tool answered from the docs, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from lifelong.context.memory_tool import MemoryTool
from lifelong.errors import NotFoundError, ValidationError

BODY = "# Deploy\n\nRun make release.\nThen tag it.\n"


def test_insert_at_a_line_of_the_file_as_read_shows_it(docs):
    docs.write("ops.md", BODY, description="How we ship")
    on_disk = docs.read("ops.md").text
    header = on_disk.split("\n---\n")[0].count("\n") + 2  # front matter lines, closing '---' included
    lines = on_disk.splitlines()
    body_first = lines.index("# Deploy") + 1  # 1-based line of the heading
    docs.insert("ops.md", body_first + 2, "Check the staging logs first.")  # after "Run make release."
    after = docs.read("ops.md").text.splitlines()
    assert after[body_first + 1: body_first + 4] == ["Run make release.", "Check the staging logs first.",
                                                    "Then tag it."]
    docs.insert("ops.md", len(after), "Last line.")  # after the last line
    assert docs.read("ops.md").text.endswith("Then tag it.\nLast line.\n")
    with pytest.raises(ValidationError, match="inside the front matter"):
        docs.insert("ops.md", 1, "x")
    with pytest.raises(ValidationError, match="cannot insert after line 999"):
        docs.insert("ops.md", 999, "x")
    assert header >= 4
    versions = docs.history("ops.md")
    assert [v.change for v in versions] == ["insert", "insert"] and "Check the staging" not in versions[0].text


def test_delete_keeps_the_content_and_restore_brings_it_back(docs):
    docs.write("old.md", BODY)
    docs.delete("old.md")
    assert not docs.exists("old.md") and [d.path for d in docs.tree()] == []
    assert docs.search("release") == []
    version = docs.history("old.md")[-1]
    assert version.change == "delete" and "Run make release." in version.text
    docs.restore("old.md", version.id)
    assert "Run make release." in docs.read("old.md").text and [h.path for h in docs.search("release")] == ["old.md"]
    with pytest.raises(NotFoundError):
        docs.delete("never.md")


def test_rename_moves_the_file_and_its_index_entry(docs):
    docs.write("draft.md", BODY, description="How we ship")
    before = docs.read("draft.md").text
    info = docs.rename("draft.md", "ops/deploy")
    assert info.path == "ops/deploy.md" and info.description == "How we ship"
    assert docs.read("ops/deploy.md").text == before  # byte for byte
    assert not docs.exists("draft.md") and [d.path for d in docs.tree()] == ["ops/deploy.md"]
    assert [h.path for h in docs.search("release")] == ["ops/deploy.md"]
    assert docs.history("draft.md")[-1].change == "rename"
    docs.write("other.md", "x")
    with pytest.raises(ValidationError, match="already exists"):
        docs.rename("other.md", "ops/deploy.md")
    with pytest.raises(ValidationError, match="would leave the workspace"):
        docs.rename("other.md", "../escape.md")
    assert docs.read("other.md").text.endswith("x")


def test_the_memory_tool_speaks_its_schema(docs):
    tool = MemoryTool(docs)
    assert tool.run({"command": "create", "path": "/memories/ops/deploy.md", "file_text": BODY}) == \
        "File created successfully at /memories/ops/deploy.md"
    listing = tool.run({"command": "view", "path": "/memories"})
    assert listing.startswith("Here're the files and directories up to 2 levels deep in /memories:")
    assert "/memories/ops/" in listing and "/memories/ops/deploy.md" in listing
    view = tool.run({"command": "view", "path": "/memories/ops/deploy.md"})
    numbered = view.splitlines()[1:]
    n_release = next(i for i, line in enumerate(numbered, 1) if line.endswith("Run make release."))
    assert numbered[n_release - 1] == f"{n_release:6d}\tRun make release."
    tool.run({"command": "insert", "path": "/memories/ops/deploy.md", "insert_line": n_release,
              "insert_text": "Check the staging logs first."})
    part = tool.run({"command": "view", "path": "/memories/ops/deploy.md", "view_range": [n_release, n_release + 1]})
    assert part.splitlines()[1:] == [f"{n_release:6d}\tRun make release.",
                                     f"{n_release + 1:6d}\tCheck the staging logs first."]
    assert "has been edited" in tool.run({"command": "str_replace", "path": "/memories/ops/deploy.md",
                                          "old_str": "Then tag it.", "new_str": "Then tag it v2."})
    tool.run({"command": "rename", "old_path": "/memories/ops/deploy.md", "new_path": "/memories/shipping.md"})
    assert "Then tag it v2." in docs.read("shipping.md").text and not docs.exists("ops/deploy.md")
    assert tool.run({"command": "delete", "path": "/memories/shipping.md"}) == \
        "Successfully deleted /memories/shipping.md"
    assert docs.tree() == []

    # Errors come back as tool results the model can act on, never as exceptions.
    bad = tool.tool_result("t1", {"command": "view", "path": "/etc/passwd"})
    assert bad["is_error"] and "outside /memories" in bad["content"] and bad["tool_use_id"] == "t1"
    bad = tool.tool_result("t2", {"command": "create", "path": "/memories/x.md", "text": "oops"})
    assert bad["is_error"] and "missing file_text; unknown text" in bad["content"]
    bad = tool.tool_result("t3", {"command": "view", "path": "/memories/../../etc/passwd"})
    assert bad["is_error"] and "'..'" in bad["content"]
    assert tool.tool_result("t4", {"command": "fly"})["content"].startswith("Error: unknown memory command 'fly'")


def test_the_memory_tool_deletes_a_folder_of_documents(docs):
    tool = MemoryTool(docs)
    for name in ("a", "b"):
        tool.run({"command": "create", "path": f"/memories/old/{name}.md", "file_text": name})
    tool.run({"command": "create", "path": "/memories/keep.md", "file_text": "keep"})
    assert "(2 documents)" in tool.run({"command": "delete", "path": "/memories/old"})
    assert [d.path for d in docs.tree()] == ["keep.md"]
    assert tool.tool_result("t", {"command": "delete", "path": "/memories"})["is_error"]
