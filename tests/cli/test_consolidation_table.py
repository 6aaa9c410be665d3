"""`lifelong bench consolidate` prints its rounds in 80 columns without cutting a cell."""

from __future__ import annotations

import io

from rich.console import Console

from lifelong.cli.bench import consolidation_table


def _record(world: int, rnd: int, condition: str, trained: bool) -> dict:
    rec = {"world": world, "round": rnd, "condition": condition, "similar": 0.4286, "round1": 0.3333,
           "dissimilar": None if condition == "notes" else 0.5833, "context_tokens": 200.9615,
           "note_tokens": 170.0 if condition == "notes" else 0.0}
    if trained:
        rec.update(steps=30, train_s=561.94, adapter_bytes=15_220_968)
    return rec


def _render(records: list[dict]) -> str:
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(consolidation_table(records))
    return console.export_text()


def test_every_cell_fits_80_columns_with_one_world_and_with_several():
    for worlds in ((100,), (100, 101)):
        records = [_record(w, r, c, c in ("adapter", "raw")) for w in worlds for r in (1, 2, 3)
                   for c in ("notes", "adapter", "raw", "none")]
        records.append({"condition": "total", "world": worlds[0]})  # the run's total line is not a row
        text = _render(records)
        assert "…" not in text
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
        rows = [line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
        assert len(rows) == 12 * len(worlds)
        adapter = next(r for r in rows if "adapter" in r)
        # the scores, whole note tokens and seconds, and the adapter in MB
        assert adapter[-6:] == ["0.429", "0.333", "0.583", "0", "562", "15.2"]
        assert ("world" in text) == (len(worlds) > 1)
