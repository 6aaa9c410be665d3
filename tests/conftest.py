"""Fixtures shared by every area: the real embedded model, loaded once per test run."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# Property tests (hypothesis): no example database in the working tree, no
# deadlines (2 shared cores make timings noisy), and a failing example is
# printed so it can be pasted into a regular test.
settings.register_profile("lifelong", database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lifelong")


@pytest.fixture(scope="session")
def local_llm():
    """The embedded Gemma 3 270M through llama.cpp (real model, ~2 s to load)."""
    from lifelong.llm import load_llm

    llm = load_llm("local?ctx=4096")
    yield llm
    llm.close()
