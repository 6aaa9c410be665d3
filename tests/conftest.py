"""Fixtures shared by every area: the real embedded model, loaded once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_llm():
    """The embedded Gemma 3 270M through llama.cpp (real model, ~2 s to load)."""
    from lifelong.llm import load_llm

    llm = load_llm("local?ctx=4096")
    yield llm
    llm.close()
