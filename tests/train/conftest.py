from __future__ import annotations

import pytest

from tests.train import tiny_reader


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny reader model (tiny_reader.py), trained once per test run (~15 s)."""
    return tiny_reader.build(tmp_path_factory.mktemp("tiny-reader"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private data dir: the store, transcripts and adapters of one test."""
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
