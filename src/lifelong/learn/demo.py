"""A short run of the protocol for ``lifelong demo``: no memory vs the full system.

Same seed, same tasks for both; the comparison is the reader score each
strategy earns on tasks similar to what the writer saw, and on dissimilar ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lifelong.learn.protocol import Protocol, ProtocolConfig
from lifelong.learn.report import final_line, summarize
from lifelong.learn.strategies import get_strategy
from lifelong.learn.suites import load_suite


def run_side_by_side(llm: Any, *, suite: str = "onboarding", episodes: int = 3, readers: int = 2,
                     seed: int = 0, max_tokens: int = 16, out: str | Path | None = None,
                     strategies: tuple[str, ...] = ("none", "full"), echo: bool = True,
                     session_factory: Any = None) -> list[dict[str, Any]]:
    """Run ``strategies`` on the same tasks; return their summaries (and print them if ``echo``)."""
    config = ProtocolConfig(episodes=episodes, readers=readers, seed=seed, max_tokens=max_tokens)
    task_suite = load_suite(suite, seed)
    with tempfile.TemporaryDirectory(prefix="lifelong-learn-demo-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        summaries = []
        for name in strategies:
            result = Protocol(llm, task_suite, get_strategy(name), config, folder,
                              session_factory=session_factory).run()
            summaries.append(summarize(result.records))
    if echo:
        from rich.console import Console

        from lifelong.learn.report import summary_table

        console = Console()
        console.print(summary_table(summaries, width=console.width))
        for s in summaries:
            print(f"{s['strategy']}: {final_line(s)}")
    return summaries
