"""Documentation on both backends: front matter, paging, search, hand edits,
and confinement of every path to the namespace's folder."""

from __future__ import annotations

import os

import pytest
import yaml

from lifelong.context import Docs, parse_document, word_count
from lifelong.errors import NotFoundError, ValidationError


def files(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_creates_markdown_with_front_matter(docs):
    info = docs.write("deploy/aws", "# Deploying to AWS\n\nRun terraform apply.\n",
                      tags=["deploy", "aws"], session="s1", task="t1")
    assert info.path == "deploy/aws.md" and info.description == "Deploying to AWS"
    raw = (docs.folder / "deploy/aws.md").read_text()
    assert raw.startswith("---\n")
    meta, body = parse_document(raw)
    assert body == "# Deploying to AWS\n\nRun terraform apply.\n"
    assert meta["description"] == "Deploying to AWS" and meta["tags"] == ["deploy", "aws"]
    prov = meta["provenance"]
    assert (prov["model"], prov["session"], prov["task"]) == ("test-model", "s1", "t1")
    assert prov["created"] == prov["updated"]
    # Overwrite keeps the creation record, takes explicit front matter from the text.
    docs.write("deploy/aws.md", "---\ndescription: AWS deploys\ntags: [ops]\n---\nNew body.\n")
    meta, body = parse_document((docs.folder / "deploy/aws.md").read_text())
    assert (meta["description"], meta["tags"], body) == ("AWS deploys", ["ops"], "New body.\n")
    assert meta["provenance"]["created"] == prov["created"] and meta["provenance"]["task"] == "t1"
    assert [d.path for d in docs.tree()] == ["deploy/aws.md"]
    assert docs.tree_text() == "- deploy/aws.md: AWS deploys"


def test_read_pages_cover_the_document_within_the_token_limit(docs):
    lines = [f"line {i} " + " ".join(f"w{i}_{j}" for j in range(i % 7 + 1)) for i in range(120)]
    docs.write("big.md", "\n".join(lines) + "\n", description="big")
    full = (docs.folder / "big.md").read_text()
    pages, offset = [], 0
    while True:
        page = docs.read("big.md", offset, max_tokens=40)
        assert page.offset == offset and page.text == full[offset:page.next_offset]
        assert word_count(page.text) <= 40 and page.tokens == word_count(page.text)
        assert page.total_chars == len(full)
        pages.append(page.text)
        if not page.more:
            break
        assert page.text.endswith("\n")  # cut at a line boundary when one is near
        offset = page.next_offset
    assert "".join(pages) == full and len(pages) > 5
    last = docs.read("big.md", len(full), max_tokens=40)
    assert (last.text, last.more, last.next_offset) == ("", False, len(full))
    with pytest.raises(ValidationError, match="outside"):
        docs.read("big.md", len(full) + 1)
    with pytest.raises(NotFoundError):
        docs.read("nope.md")


def test_append_and_str_replace(docs):
    docs.write("notes/ci.md", "CI runs on push.", description="CI")
    docs.append("notes/ci.md", "It takes 10 minutes.\n")
    assert docs.read("notes/ci.md").text.endswith("---\n\nCI runs on push.\nIt takes 10 minutes.\n")
    docs.append("notes/ci.md", "Flaky tests cost minutes.")
    docs.str_replace("notes/ci.md", "10 minutes", "12 minutes")
    assert "It takes 12 minutes." in docs.read("notes/ci.md").text
    # The replacement may touch front matter, but must leave it valid.
    docs.str_replace("notes/ci.md", "description: CI", "description: Continuous integration")
    assert docs.tree()[0].description == "Continuous integration"
    before = files(docs.folder)
    with pytest.raises(ValidationError, match="occurs 0 times"):
        docs.str_replace("notes/ci.md", "20 minutes", "x")
    with pytest.raises(ValidationError, match="occurs 2 times"):
        docs.str_replace("notes/ci.md", "minutes", "x")  # in the body and in the appended line
    with pytest.raises(ValidationError, match="front matter"):
        docs.str_replace("notes/ci.md", "tags: []", "tags: [[[")
    with pytest.raises(NotFoundError, match="docs write"):
        docs.append("missing.md", "x")
    assert files(docs.folder) == before


def test_search_finds_by_words_and_ranks(docs):
    docs.write("deploy.md", "Deploys go through terraform and the release pipeline.", description="Deploying")
    docs.write("db/postgres.md", "Postgres runs on port 5432; backups nightly.", description="Database")
    docs.write("misc.md", "The coffee machine is on floor two.", description="Office")
    hits = docs.search("How do I deploy with terraform?")
    assert hits[0].path == "deploy.md" and "[terraform]" in hits[0].snippet
    assert [h.path for h in docs.search("postgres backups")] == ["db/postgres.md"]
    assert docs.search("kubernetes") == []
    assert len(docs.search("deploy postgres coffee", limit=2)) == 2
    with pytest.raises(ValidationError, match="empty search"):
        docs.search("  ?! ")


def test_hand_edits_on_disk_are_picked_up(docs):
    docs.write("runbook.md", "Restart the web tier with systemctl.", description="Runbook")
    path = docs.folder / "runbook.md"
    # A person edits the file in an editor, and adds another by hand.
    path.write_text(path.read_text().replace("systemctl", "supervisorctl"))
    (docs.folder / "hand").mkdir()
    (docs.folder / "hand/written.md").write_text("No front matter, just zeppelin facts.\n")
    assert [h.path for h in docs.search("supervisorctl")] == ["runbook.md"]
    assert docs.search("systemctl") == []
    assert [h.path for h in docs.search("zeppelin")] == ["hand/written.md"]
    # An edit that restores the old mtime is still seen: the size changed.
    st = path.stat()
    path.write_text(path.read_text().replace("supervisorctl", "supervisorctl gracefully"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [h.path for h in docs.search("gracefully")] == ["runbook.md"]
    # A broken front matter written by hand is indexed as text and reported.
    (docs.folder / "broken.md").write_text("---\ndescription: [unclosed\n---\nwombat\n")
    broken = {d.path: d for d in docs.tree()}["broken.md"]
    assert "YAML" in broken.error
    assert [h.path for h in docs.search("wombat")] == ["broken.md"]
    with pytest.raises(ValidationError, match="front matter"):
        docs.append("broken.md", "more")
    # Removing a file removes it from the index.
    (docs.folder / "hand/written.md").unlink()
    assert docs.search("zeppelin") == []
    assert [d.path for d in docs.tree()] == ["broken.md", "runbook.md"]


def test_paths_are_confined_to_the_workspace(docs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("top secret")
    (docs.folder / "link.md").symlink_to(outside / "secret.md")
    (docs.folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (docs.folder / "inside.md").symlink_to(docs.folder / "real.md")
    cases = {
        "../outside/secret.md": "'..'",
        "a/../../outside/secret.md": "'..'",
        "/etc/passwd.md": "absolute",
        str(outside / "secret.md"): "absolute",
        "~/x.md": "absolute",
        "link.md": "symlink",
        "linkdir/secret.md": "symlink",
        "linkdir/new.md": "symlink",
        ".hidden.md": "hidden",
        "notes.txt": "Markdown",
        "": "empty",
        "a\\b.md": "invalid characters",
    }
    for path, why in cases.items():
        for op in (lambda p: docs.read(p), lambda p: docs.write(p, "x"),
                   lambda p: docs.append(p, "x"), lambda p: docs.str_replace(p, "top", "x")):
            with pytest.raises(ValidationError, match=why):
                op(path)
    assert (outside / "secret.md").read_text() == "top secret" and sorted(os.listdir(outside)) == ["secret.md"]
    assert all("secret" not in h.path for h in docs.search("secret"))
    # A symlink that stays inside the workspace is fine.
    docs.write("real.md", "real content", description="real")
    assert "real content" in docs.read("inside.md").text


def test_invalid_front_matter_is_refused_and_nothing_changes(docs):
    docs.write("ok.md", "fine", description="ok")
    before = files(docs.folder)
    bad = {
        "---\ndescription: [unclosed\n---\nbody": "not valid YAML",
        "---\n- a\n- b\n---\nbody": "mapping",
        "---\ndescription: 3\n---\nbody": "description",
        "---\ntags: deploy\n---\nbody": "tags",
        "---\ntags: [has space]\n---\nbody": "tags",
        "---\nprovenance: x\n---\nbody": "provenance",
        "---\ndescription: never closed\nbody": "never closed",
    }
    for text, why in bad.items():
        with pytest.raises(ValidationError, match=why):
            docs.write("ok.md", text)
        with pytest.raises(ValidationError, match=why):
            docs.write("new.md", text)
    with pytest.raises(ValidationError, match="nothing to append"):
        docs.append("ok.md", "")
    assert files(docs.folder) == before


def test_documents_round_trip_for_a_person(docs):
    """What a person sees is plain Markdown with YAML they can edit and diff."""
    docs.write("howto.md", "Step 1.\nStep 2.\n", description="How to", tags=["guide"])
    raw = (docs.folder / "howto.md").read_text()
    header = raw.split("---\n")[1]
    assert yaml.safe_load(header)["tags"] == ["guide"]
    assert raw.endswith("---\n\nStep 1.\nStep 2.\n")


def test_unknown_namespace_for_docs(store, tmp_path):
    with pytest.raises(NotFoundError, match="unknown namespace"):
        Docs(store, "nobody", tmp_path, word_count)


def test_every_change_keeps_the_content_it_replaced(docs):
    docs.write("plan.md", "v1 body", description="plan", session="s1")
    first = (docs.folder / "plan.md").read_text()
    docs.append("plan.md", "v2 line")
    second = (docs.folder / "plan.md").read_text()
    docs.str_replace("plan.md", "v1 body", "v3 body")
    third = (docs.folder / "plan.md").read_text()
    docs.write("plan.md", "rewritten from scratch")
    versions = docs.history("plan.md")
    assert [(v.change, v.text) for v in versions] == [
        ("append", first), ("str_replace", second), ("write", third)]
    assert all(v.model == "test-model" for v in versions)
    docs.restore("plan.md", versions[0].id)
    meta, body = parse_document((docs.folder / "plan.md").read_text())
    assert body == "v1 body" and meta["provenance"]["session"] == "s1"
    assert [v.change for v in docs.history("plan.md")][-1] == "restore"
    assert [h.path for h in docs.search("v1")] == ["plan.md"]
    with pytest.raises(NotFoundError, match="no version 999"):
        docs.restore("plan.md", 999)
    assert docs.history("other.md") == []
