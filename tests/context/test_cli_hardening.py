"""The CLI under bad input: what users, files and models wrote is never read as
rich markup, bytes that are not UTF-8 (argv, stdin, --file) are a clear error,
and arbitrary arguments give exit code 0, 1 (a one-line error) or 2 (usage),
never a traceback, never a change outside the workspace or a lost memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.context import Docs, Notes, open_store, word_count

from .test_cli import cli  # noqa: F401  (the fixture)


def run_any(*args: str) -> tuple[int, str, str]:
    """``lifelong ARGS…`` in this process: (exit code, stdout, stderr); any
    exception but SystemExit is a bug and fails the test."""
    from lifelong.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code


def test_error_text_is_never_read_as_markup(cli):  # noqa: F811
    cli("docs", "write", "a.md", "a first document")
    err = cli("docs", "read", "[/x].md", ok=False).stderr
    assert "no document '[/x].md'" in err
    err = cli("docs", "read", "[blink]zz.md", ok=False).stderr
    assert "no document '[blink]zz.md'" in err
    err = cli("docs", "write", "bad.md", stdin="---\ntags: deploy\n---\nbody", ok=False).stderr
    assert "e.g. tags: [deploy, aws]" in err
    cli("notes", "add", "The [bold]staging[/bold] host is [red]blue[/].")
    assert "The [bold]staging[/bold] host is [red]blue[/]." in cli("notes", "show", "1").stdout


def test_bytes_that_are_not_utf8_are_a_clear_error(cli, tmp_path, monkeypatch):  # noqa: F811
    cli("docs", "write", "a.md", "a first document")
    bad = os.fsdecode(b"x\xff.md")  # what Python makes of such an argv entry
    assert "not valid UTF-8" in cli("docs", "write", bad, "body", ok=False).stderr
    assert "not valid UTF-8" in cli("notes", "add", os.fsdecode(b"caf\xe9"), ok=False).stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Crème brûlée".encode("latin-1"))
    err = cli("docs", "write", "menu.md", "--file", str(latin1), ok=False).stderr
    assert "is not UTF-8 text (byte 0xe8 at offset 2)" in err
    err = cli("docs", "write", "menu.md", "--file", str(tmp_path / "missing.txt"), ok=False).stderr
    assert "no file" in err and "missing.txt" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe body")))
    from lifelong.cli.common import text_arg

    try:
        text_arg(None, None)
    except Exception as exc:  # noqa: BLE001
        assert "stdin is not UTF-8 text" in str(exc)
    else:
        raise AssertionError("stdin that is not UTF-8 was accepted")
    assert not (tmp_path / "docs/default/menu.md").exists()


def test_a_real_process_with_bytes_in_argv_and_stdin(tmp_path):
    env = {**os.environ, "LIFELONG_HOME": str(tmp_path), "LIFELONG_STORE": f"sqlite:///{tmp_path / 's.db'}",
           "LIFELONG_DOCS": str(tmp_path / "docs")}
    for args, stdin, expected in (
        ([b"docs", b"write", b"x\xff.md", b"body"], b"", "not valid UTF-8"),
        ([b"docs", b"write", b"menu.md"], "Crème".encode("latin-1"), "stdin is not UTF-8 text"),
        ([b"notes", b"delete", b"99999999999999999999"], b"", "no note 99999999999999999999"),
    ):
        proc = subprocess.run([sys.executable.encode(), b"-m", b"lifelong.cli.main", *args], env=env,
                              input=stdin, capture_output=True, timeout=120)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 1 and expected in " ".join(err.split()) and "Traceback" not in err, err
    assert not list((tmp_path / "docs").rglob("*.md"))


COMMANDS = st.sampled_from([
    ["docs", "read"], ["docs", "write"], ["docs", "append"], ["docs", "str-replace"], ["docs", "history"],
    ["docs", "restore"], ["docs", "search"], ["notes", "add"], ["notes", "delete"], ["notes", "edit"],
    ["notes", "show"], ["notes", "supersede"],
])
ARGS = st.lists(st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=200, max_size=400),
    st.sampled_from([".", "..", "../x.md", "/etc/passwd", "plain.md/x.md", "[/x].md", "a\nb.md", "x\udcff.md",
                     "--offset", "-5", "99999999999999999999", "0", "1", "--text", "--file", "/etc/hostname"]),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
).filter(lambda a: "\x00" not in a), max_size=5)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=COMMANDS, args=ARGS)
def test_any_arguments_exit_cleanly_and_lose_nothing(cli, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                      command, args):
    store = open_store(os.environ["LIFELONG_STORE"])
    try:
        notes = Notes(store, "default", 100_000, word_count, create=True)
        if not notes.list(status=None):
            notes.add("a note that must survive")
        docs = Docs(store, "default", tmp_path / "docs", word_count, create=True)
        if not docs.exists("plain.md"):
            docs.write("plain.md", "a document that must survive")
        (tmp_path / "docs/default/adir.md").mkdir(exist_ok=True)
    finally:
        store.close()
    outside = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = run_any(*command, *args)
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith("error:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    store = open_store(os.environ["LIFELONG_STORE"])
    try:
        notes = Notes(store, "default", 100_000, None)
        assert "a note that must survive" in [n.text for n in notes.list(status=None)]
        docs = Docs(store, "default", tmp_path / "docs", word_count)
        survived = (tmp_path / "docs/default/plain.md").is_file() or docs.history("plain.md")
        assert survived
    finally:
        store.close()
