"""`lifelong bench continual` prints scores and cost in 80 columns without cutting a cell."""

from __future__ import annotations

import io

from rich.console import Console

from lifelong.cli.bench import continual_tables


def _aggregate(name: str, metric: str, big: float) -> dict:
    stat = {"mean": -big / 3, "std": big / 7}
    return {"learner": name, "metric": metric, "average": {"mean": big, "std": big / 9}, "bwt": stat,
            "forgetting": {"mean": big / 2, "std": None}, "alone_average": {"mean": None, "std": None},
            "floor_average": {"mean": big / 4, "std": 0.0}, "context_tokens_per_query": 1234.5,
            "memory_tokens": 170.0, "state_bytes": 270_895_200.0, "learn_s": 1234.56, "answer_s_per_query": 12.345}


def _render(tables) -> str:
    console = Console(width=80, file=io.StringIO(), record=True)
    for t in tables:
        console.print(t)
    return console.export_text()


def test_both_tables_fit_80_columns_for_every_learner():
    names = ("none", "icl", "memory", "memory+docs", "hope-gemma", "hope-gemma+icl")
    for metric, big in (("chrF", 88.88), ("accuracy", 0.4444)):
        aggs = [_aggregate(n, metric, big) for n in names]
        text = _render(continual_tables(aggs, alone=True, seeds=[0, 1, 2], stream="novel_translation"))
        assert "…" not in text
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
        for n in names:
            assert sum(line.split()[:1] == [n] for line in text.splitlines()) == 2  # one row per table
        row = next(line.split() for line in text.splitlines() if line.split()[:1] == ["hope-gemma+icl"])
        if metric == "chrF":
            assert row[1:] == ["88.9±9.9", "-29.6±12.7", "44.4", "n/a", "22.2±0.0"]
        else:
            assert row[1:] == ["0.44±0.05", "-0.15±0.06", "0.22", "n/a", "0.11±0.00"]
    cost = [line.split() for line in text.splitlines() if line.split()[:1] == ["hope-gemma"]][1]
    assert cost[1:] == ["1234", "170", "270.9", "1234.6", "12.35"]  # state in MB
