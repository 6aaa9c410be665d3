"""The defects a newcomer met in the first hour, each pinned by a test."""

from __future__ import annotations

import json
import re
import socket

import pytest

import lifelong
from lifelong.context import Notes, open_store, word_count


def test_version(shell):
    assert shell("--version").stdout.strip() == f"lifelong {lifelong.__version__}"


def test_help_reads_at_80_columns(shell):
    """Plain help: no column of types beside every option, no literal backticks, no line past 80."""
    for args in (["run", "--help"], ["learn", "eval", "--help"], ["consolidate", "--help"],
                 ["notes", "export", "--help"]):
        out = shell(*args).stdout
        assert max(len(line) for line in out.splitlines()) <= 80, args
        assert "<bool>" not in out and "``" not in out, args
        assert "╭" not in out and not any(line.endswith("…") for line in out.splitlines()), args
    run_help = shell("run", "--help").stdout
    assert "--reflect / --no-reflect" in run_help
    assert "The model that does the work" in " ".join(run_help.split())
    assert "LIFELONG_MODEL" in shell("learn", "eval", "--help").stdout  # --model follows the env too


def test_read_only_commands_create_nothing(cli, tmp_path, home):
    target = tmp_path / "nonexistent" / "dir" / "x.db"
    err = cli("notes", "list", "--store", str(target), ok=False).stderr
    assert "no store at" in err and not target.parent.exists()
    for args in (["notes", "list"], ["notes", "stats"], ["docs", "tree"], ["notes", "namespaces"]):
        assert "no store at" in cli(*args, ok=False).stderr
    assert not home.exists()  # not even the data folder


def test_a_taken_port_is_named(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = " ".join(cli("llm", "serve", "--port", str(port), ok=False).stderr.split())
    assert f"port {port} on 127.0.0.1 is taken" in err and "GGUF" not in err


def test_a_bad_spec_option_reads_as_english(cli):
    err = " ".join(cli("llm", "tokens", "hi", "-m", "local?ctx=big", ok=False).stderr.split())
    assert "is not a whole number" in err and "a int" not in err


def test_export_merges_into_a_marked_section(cli, tmp_path):
    agents, claude = tmp_path / "AGENTS.md", tmp_path / "CLAUDE.md"
    agents.write_text("# Our agents\n\nRun `make test` before every push.\n")
    cli("notes", "add", "Deploy with make release.", "-n", "acme", "-m", "local")
    cli("notes", "export", "--agents-md", str(agents), "--claude-md", str(claude), "-n", "acme")
    text = agents.read_text()
    assert text.startswith("# Our agents\n\nRun `make test` before every push.\n")  # kept, as written
    assert "- [1] Deploy with make release." in text
    assert claude.read_text().startswith("# CLAUDE.md\n")  # its own heading, not AGENTS.md's
    cli("notes", "add", "Tickets use the prefix OPS-.", "-n", "acme", "-m", "local")
    agents.write_text(agents.read_text() + "\nA line added by hand after the export.\n")
    cli("notes", "export", "--agents-md", str(agents), "-n", "acme")
    again = agents.read_text()
    assert again.count("<!-- lifelong:notes namespace=acme -->") == 1  # replaced, not appended twice
    assert "- [2] Tickets use the prefix OPS-." in again
    assert again.startswith("# Our agents\n") and again.endswith("A line added by hand after the export.\n")


def test_complete_prints_only_the_text_on_stdout(cli):
    r = cli("llm", "complete", "The capital of France is", "--max-tokens", "4")
    assert "tokens" not in r.stdout and "prompt +" in r.stderr


def test_hints_name_the_namespace_so_they_run_as_shown(cli):
    cli("notes", "add", "Deploy with make release.", "-n", "acme")
    out = " ".join(cli("notes", "delete", "1", "-n", "acme").stdout.split())
    hint = re.search(r"restore it with: (lifelong notes restore [^)]*)\)", out).group(1)
    assert hint == "lifelong notes restore 1 -n acme"
    cli(*hint.split()[1:])  # runs as shown
    assert [n["id"] for n in json.loads(cli("notes", "list", "--json", "-n", "acme").stdout)] == [1]


def test_consolidate_shows_a_diff_and_asks_before_it_replaces_notes(cli, home):
    url = f"sqlite:///{home / 'lifelong.db'}"
    home.mkdir(parents=True)
    with open_store(url) as store:
        notes = Notes(store, "acme", 1000, word_count, create=True, near_duplicate_threshold=1.01)
        for text in ("Reports are due every Friday.", "Reports are due every single Friday.",
                     "Use the VPN when working from home."):
            notes.add(text)
    before = cli("notes", "render", "-n", "acme").stdout
    dry = cli("consolidate", "-n", "acme", "--no-model", "--dry-run").stdout
    assert "- [1] Reports are due every Friday." in dry and "- [2] Reports are due every single Friday." in dry
    assert "+ [4] Reports are due every single Friday." in dry and "  [3] Use the VPN" in dry
    assert "dry run, not applied" in dry
    # Without a terminal to ask on, a destructive plan waits for --yes.
    err = " ".join(cli("consolidate", "-n", "acme", "--no-model", ok=False).stderr.split())
    assert "not applied without confirmation" in err and "--yes" in err
    assert cli("notes", "render", "-n", "acme").stdout == before
    out = " ".join(cli("consolidate", "-n", "acme", "--no-model", "--yes").stdout.split())
    assert "applied: duplicates plan" in out and "lifelong notes restore ID -n acme" in out
    assert cli("notes", "render", "-n", "acme").stdout == (
        "## Notes\n- [3] Use the VPN when working from home.\n- [4] Reports are due every single Friday.\n")


def test_consolidate_asks_on_a_terminal(cli, home, monkeypatch):
    home.mkdir(parents=True)
    with open_store(f"sqlite:///{home / 'lifelong.db'}") as store:
        notes = Notes(store, "acme", 1000, word_count, create=True, near_duplicate_threshold=1.01)
        notes.add("Reports are due every Friday.")
        notes.add("Reports are due every single Friday.")
    import sys

    class Tty:
        def __init__(self, answer: str) -> None:
            self.lines = [answer + "\n"]

        def isatty(self) -> bool:
            return True

        def readline(self, *a) -> str:
            return self.lines.pop(0) if self.lines else ""

        read = readline

    monkeypatch.setattr(sys, "stdin", Tty("n"))
    from lifelong.cli.main import main

    with pytest.raises(SystemExit):
        main(["consolidate", "-n", "acme", "--no-model"])
    with open_store(f"sqlite:///{home / 'lifelong.db'}") as store:
        assert len(Notes(store, "acme", 1000, None).list()) == 2  # declined: nothing changed
