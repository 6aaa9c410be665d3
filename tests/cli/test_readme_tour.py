"""The README's CLI tour, its memory commands run literally, as written there, on a
fresh data folder with the real embedded model: what it leaves must be true."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from lifelong.context.grounding import leaked, ungrounded
from lifelong.context.session import REFLECTION_EXAMPLES

README = Path(__file__).resolve().parents[2] / "README.md"
MEMORY_COMMANDS = {"run", "notes", "docs", "consolidate"}  # the rest serve, train or take minutes


def tour_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("## A short tour of the CLI", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["lifelong"] and len(words) > 1 and words[1] in MEMORY_COMMANDS:
            commands.append(words[1:])
    return commands


def test_the_tour_has_the_memory_commands():
    names = [" ".join(c[:2]) for c in tour_commands()]
    assert names[:2] == ["run What is the code word of the Blue team?",
                         "run A new member joins the Blue team. Which code word must they use?"]
    assert "consolidate -n" in " ".join(" ".join(c) for c in tour_commands())


@pytest.mark.slow
def test_the_tour_leaves_only_correct_notes(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # notes export writes AGENTS.md here
    seen = []  # everything the model was told: a note may state only that
    for args in tour_commands():
        seen += [a for a in args if not a.startswith("-")]
        if args[0] == "consolidate" and "--dry-run" not in args:
            r = cli(*args, ok=None)  # no terminal to ask on: a plan that replaces notes waits for --yes
            assert r.returncode == 0 or "not applied without confirmation" in r.stderr
        else:
            cli(*args)
    notes = json.loads(cli("notes", "list", "--json", "-n", "acme").stdout)
    texts = [n["text"] for n in notes]
    assert any("MARIGOLD" in t for t in texts), texts  # the lesson is kept
    for text in texts:
        assert not leaked(text, "\n".join(REFLECTION_EXAMPLES), seen), text
        assert not ungrounded(text, seen), text
        assert not re.search(r"9443|8080|staging", text, re.I), text
    assert len({t.casefold() for t in texts}) == len(texts)  # no twins
    assert "MARIGOLD" in (tmp_path / "AGENTS.md").read_text()
