"""``lifelong notes …`` and ``lifelong docs …`` as a user runs them: the
console entry point on a real SQLite file (and one PostgreSQL URL), with the
real embedded model counting tokens; errors also from a real process."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from lifelong.context import Notes, open_store, parse_document


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``lifelong ARGS…`` in this process (the embedded model then loads
    once for the whole module) through the same ``main`` the console script
    calls: exit code, stdout and stderr as a user sees them."""
    from lifelong.cli.main import main

    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFELONG_STORE", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("LIFELONG_MODEL", "local")
    monkeypatch.setenv("LIFELONG_DOCS", str(tmp_path / "docs"))
    monkeypatch.delenv("LIFELONG_NAMESPACE", raising=False)

    def run(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        err = " ".join(err.split())  # rich wraps messages at the terminal width
        code = exit_.value.code or 0
        assert (code == 0) == ok, out + err
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def test_notes_commands(cli, tmp_path):
    from lifelong.cli.common import LazyModel as _LazyModel

    out = cli("notes", "add", "Deploy with make release, not scripts/deploy.sh.", "-t", "deploy",
              "--session", "s1", "--task", "ship it").stdout
    assert "added note 1" in out
    assert "exact duplicate of note 1" in cli("notes", "add", "deploy with make release, not scripts/deploy.sh").stdout
    cli("notes", "add", "The [staging] DB is read-only on Fridays.")
    cli("notes", "edit", "2", "Fridays", "Friday afternoons")
    notes = json.loads(cli("notes", "list", "--json").stdout)
    assert [n["text"] for n in notes] == ["Deploy with make release, not scripts/deploy.sh.",
                                          "The [staging] DB is read-only on Friday afternoons."]
    llm = _LazyModel("local").llm  # the model instance the commands counted with
    assert notes[0]["tokens"] == llm.count_tokens(notes[0]["text"])  # the model's own tokenizer
    block = cli("notes", "render").stdout
    assert block == ("## Notes\n- [1] Deploy with make release, not scripts/deploy.sh.\n"
                     "- [2] The [staging] DB is read-only on Friday afternoons.\n")
    stats = json.loads(cli("notes", "stats", "--json").stdout)
    assert stats["tokens_used"] == llm.count_tokens(block)
    assert stats["budget_tokens"] == llm.context_window // 2  # the seed's default reserve
    assert stats["free_tokens"] == stats["budget_tokens"] - stats["tokens_used"]
    assert stats["days_left"] is None  # minutes of history: no extrapolation to a month
    assert "not estimated yet" in cli("notes", "stats").stdout
    shown = json.loads(cli("notes", "show", "1", "--json").stdout)
    assert [e["kind"] for e in shown["history"]] == ["add", "duplicate"]
    assert (shown["note"]["session"], shown["note"]["task"]) == ("s1", "ship it")
    assert "[staging]" in cli("notes", "list").stdout  # user text is never read as markup

    # A tight budget refuses a write, with what to do; nothing changes.
    err = cli("notes", "add", "One more note that does not fit.", "--budget", "30", ok=False).stderr
    assert "over its budget of 30" in err and "consolidate" in err and "Traceback" not in err
    cli("notes", "delete", "2", "--reason", "no longer true")
    assert "purge removes notes" in cli("notes", "purge", "2", ok=False).stderr
    cli("notes", "purge", "2", "--yes")
    assert [n["id"] for n in json.loads(cli("notes", "list", "--all", "--json").stdout)] == [1]
    cli("notes", "export", "--agents-md", str(tmp_path / "AGENTS.md"))
    assert "- [1] Deploy with make release" in (tmp_path / "AGENTS.md").read_text()
    err = cli("notes", "list", "-n", "nobody", ok=False).stderr
    assert "unknown namespace 'nobody'" in err and "Traceback" not in err
    assert cli("notes", "namespaces").stdout.split() == ["default"]


def test_docs_commands(cli, tmp_path):
    from lifelong.cli.common import LazyModel as _LazyModel

    cli("docs", "write", "ops/deploy", "-d", "How we deploy", "-t", "ops",
        stdin="# Deploying\n\nRun make release from a clean checkout.\n")
    raw = (tmp_path / "docs/default/ops/deploy.md").read_text()
    meta, body = parse_document(raw)
    assert meta["description"] == "How we deploy" and body.startswith("# Deploying")
    cli("docs", "append", "ops/deploy.md", "Then tag the release.")
    cli("docs", "str-replace", "ops/deploy.md", "clean checkout", "clean [main] checkout")
    assert "ops/deploy.md" in cli("docs", "tree").stdout
    hits = json.loads(cli("docs", "search", "release checkout", "--json").stdout)
    assert [h["path"] for h in hits] == ["ops/deploy.md"]
    page = cli("docs", "read", "ops/deploy.md", "--max-tokens", "20")
    assert page.stdout.startswith("---\n") and "more: --offset" in page.stderr
    tokens = int(page.stderr.split(" tokens;")[0].split()[-1])
    assert tokens == _LazyModel("local").llm.count_tokens(page.stdout) <= 20  # the model's tokens
    full = (tmp_path / "docs/default/ops/deploy.md").read_text()
    offset = int(page.stderr.split("--offset")[1].split()[0])
    assert full.startswith(page.stdout[:offset])
    rest = cli("docs", "read", "ops/deploy.md", "--offset", str(offset), "--max-tokens", "10000")
    # The command ends a page with a newline when the page has none; the text itself is exact.
    assert page.stdout[:offset] + rest.stdout.rstrip("\n") == full.rstrip("\n")
    assert "end of document" in rest.stderr
    versions = json.loads(cli("docs", "history", "ops/deploy.md", "--json").stdout)
    assert [v["change"] for v in versions] == ["append", "str_replace"]
    cli("docs", "restore", "ops/deploy.md", str(versions[0]["id"]))
    assert "clean checkout" in (tmp_path / "docs/default/ops/deploy.md").read_text()
    err = cli("docs", "read", "../secrets.md", ok=False).stderr
    assert "'..' would leave the workspace" in err and "Traceback" not in err
    err = cli("docs", "write", "bad.md", stdin="---\ntags: oops\n---\nx", ok=False).stderr
    assert "tags" in err and not (tmp_path / "docs/default/bad.md").exists()


def test_cli_against_postgres(cli, postgres_server):
    url = postgres_server.new_database()
    cli("docs", "write", "a.md", "postgres full text search works", "--store", url)
    hits = json.loads(cli("docs", "search", "search", "--json", "--store", url).stdout)
    assert [h["path"] for h in hits] == ["a.md"]
    with open_store(url) as store:
        assert store.namespaces() == ["default"]
        assert Notes(store, "default", 100, len).list() == []


def test_errors_from_a_real_process_have_no_traceback(tmp_path):
    env = {**os.environ, "LIFELONG_HOME": str(tmp_path), "LIFELONG_STORE": f"sqlite:///{tmp_path / 's.db'}"}
    for args, expected in (
        (["notes", "list", "-n", "nobody"], "no store at"),  # a read creates no store
        (["docs", "write", "/etc/passwd.md", "x"], "absolute path"),
        (["notes", "purge", "1"], "add --yes to confirm"),
    ):
        proc = subprocess.run([sys.executable, "-m", "lifelong.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_bench_store_runs_on_both_backends(cli, postgres_server):
    """The benchmark command at toy sizes (its figures are recorded from full runs, not asserted)."""
    out = cli("bench", "store", "--notes", "30", "--docs", "30", "--queries", "5", "--writes", "5",
              "--postgres-url", postgres_server.new_database()).stdout
    assert "sqlite" in out and "postgres" in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"render_ms=[\d.]+ search_p50_ms=[\d.]+ search_p99_ms=[\d.]+ writes_s=\d+", last)
