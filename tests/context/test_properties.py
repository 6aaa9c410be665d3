"""Property tests: arbitrary doc paths, texts, note ids and arguments thrown at
the Notes and Docs API on both backends. Every call either works or raises a
LifelongError; nothing outside the workspace is touched; nothing stored is
lost (every note keeps existing with its history, every content a document
ever had is its file or one of its versions)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.context import Docs, Notes
from lifelong.errors import LifelongError

ANY_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Lu", "Mn"]), max_size=12),
    st.sampled_from(["", " ", "---\n", "---\ntags: [x y]\n---\n", "\x00", "a\udcffb", "[/x]", "e\u0301"]),
)
PATHS = st.one_of(
    st.text(max_size=30),
    st.sampled_from([".", "..", "/", "./", "a/../../x", "~/x", "plain.md/x.md", "adir.md", "a\nb", "\x00",
                     "x\udcff.md", "café.md", "cafe\u0301.md", "a" * 300, "/".join(["a"] * 40),
                     "../outside/keep.md", "link.md", "link.md/x.md"]),
    st.lists(st.sampled_from(["a", "..", ".", "plain.md", "é", "e\u0301", "b.md", " "]), max_size=8).map("/".join),
)
IDS = st.one_of(st.integers(min_value=-5, max_value=20), st.integers(min_value=-(10**30), max_value=10**30))
OPS = st.one_of(
    st.tuples(st.just("write"), PATHS, ANY_TEXT, st.one_of(st.none(), ANY_TEXT)),
    st.tuples(st.just("append"), PATHS, ANY_TEXT),
    st.tuples(st.just("str_replace"), PATHS, ANY_TEXT, ANY_TEXT),
    st.tuples(st.just("read"), PATHS, IDS, IDS),
    st.tuples(st.just("history"), PATHS),
    st.tuples(st.just("restore"), PATHS, IDS),
    st.tuples(st.just("search"), ANY_TEXT),
    st.tuples(st.just("add"), ANY_TEXT, st.lists(ANY_TEXT, max_size=2)),
    st.tuples(st.just("edit"), IDS, ANY_TEXT, ANY_TEXT),
    st.tuples(st.just("supersede"), st.lists(IDS, max_size=3), ANY_TEXT),
    st.tuples(st.just("delete"), IDS),
    st.tuples(st.just("note_history"), IDS),
)


def apply(notes: Notes, docs: Docs, op: tuple) -> object:
    kind, *args = op
    if kind == "write":
        return docs.write(args[0], args[1], description=args[2])
    if kind == "append":
        return docs.append(*args)
    if kind == "str_replace":
        return docs.str_replace(*args)
    if kind == "read":
        return docs.read(args[0], args[1], args[2])
    if kind == "history":
        return docs.history(args[0])
    if kind == "restore":
        return docs.restore(*args)
    if kind == "search":
        return docs.search(args[0])
    if kind == "add":
        return notes.add(args[0], tags=args[1])
    if kind == "edit":
        return notes.edit(*args)
    if kind == "supersede":
        return notes.supersede(args[0], args[1])
    if kind == "delete":
        return notes.delete(args[0])
    return notes.history(args[0])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=12))
def test_any_calls_work_or_raise_a_lifelong_error_and_lose_nothing(notes, docs, tmp_path, ops):
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.md").write_text("outside the workspace")
    if not (docs.folder / "link.md").is_symlink():
        (docs.folder / "link.md").symlink_to(outside / "keep.md")
        (docs.folder / "adir.md").mkdir()
        docs.write("plain.md", "a document that exists from the start")
    around = sorted(p.name for p in tmp_path.iterdir())
    seen_notes = {n.id for n in notes.list(status=None)}
    contents: dict[str, set[bytes]] = {}
    for op in ops:
        try:
            apply(notes, docs, op)
        except LifelongError:
            pass
        for d in docs.tree():  # what every document holds now must never be lost
            contents.setdefault(d.path, set()).add((docs.folder / d.path).read_bytes())
        seen_notes |= {n.id for n in notes.list(status=None)}
    assert sorted(p.name for p in tmp_path.iterdir()) == around
    assert os.listdir(outside) == ["keep.md"] and (outside / "keep.md").read_text() == "outside the workspace"
    for nid in seen_notes:
        assert notes.get(nid).id == nid and notes.history(nid)
    for path, datas in contents.items():
        kept = {v.data for v in docs.history(path)}
        if (docs.folder / path).is_file():
            kept.add((docs.folder / path).read_bytes())
        assert datas <= kept, path
