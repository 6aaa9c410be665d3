"""Before / after table of `lifelong learn eval` runs with different writers.

    python configs/learn/compare_writers.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is an `--out` folder of `lifelong learn eval --strategy notes`.
Prints one markdown row per run: the writer, similar / dissimilar reader
scores (with counts), note tokens (mean over episodes / at the end), mean
reward, what the writer's reflections asked for (add / EDIT / DELETE / NONE /
empty) and how many of them were carried out, and, for `onboarding-drift`
worlds, the notes at the end that still state the value a convention had
before it changed (stale notes).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lifelong.learn.onboarding import DriftingOnboarding
from lifelong.learn.strategies import MemoryFolder, get_strategy
from lifelong.learn.suites import DRIFT_AT
from lifelong.learn.writer_env import note_op


class _Words:
    name = ""

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "—"


def row(folder: Path) -> str:
    log = folder / "notes" / "sessions.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = records[0]
    sessions = [r for r in records if r["type"] == "session"]
    episodes = [r for r in records if r["type"] == "episode"]
    readers = [r for r in sessions if r["role"] == "reader"]
    writers = [r for r in sessions if r["role"] == "writer"]
    score = {rel: [r["score"] or 0.0 for r in readers if r["relation"] == rel] for rel in ("similar", "dissimilar")}
    ops = {k: 0 for k in ("add", "edit", "delete", "none", "empty")}
    applied = 0
    for w in writers:
        lines = [m["content"] for m in (w.get("transcript") or []) if m.get("role") == "reflection"]
        ops[note_op(lines[0] if lines else "")] += 1
        applied += bool(w["notes_written"])
    last = max(e["episode"] for e in episodes)
    memory = MemoryFolder(folder / "notes" / "memory" / f"episode-{last:04d}", _Words(), get_strategy("notes"),
                          100000)
    final = [ln for ln in memory.notes_text().splitlines() if ln.startswith("- [")]
    stale = "—"
    if header["suite"] == "onboarding-drift" and last >= DRIFT_AT:
        world = DriftingOnboarding(world_seed=header["seed"], change_at=DRIFT_AT)
        old = [a for a, b in zip(world.conventions, world.changed, strict=True) if a != b]
        words = [w.lower() for c in old for w in ([c.answer] + list(c.alternatives))]
        stale = str(sum(any(w in n.lower() for w in words) for n in final))
    notes = [e["note_tokens"] for e in episodes]
    name = f"{header['suite']} seed {header['seed']}"
    writer = header.get("writer", header["model"])
    return (f"| {name} | {writer} | {_mean(score['similar'])} (n={len(score['similar'])}) | "
            f"{_mean(score['dissimilar'])} (n={len(score['dissimilar'])}) | "
            f"{statistics.fmean(notes):.1f} / {notes[-1]} | {_mean([e['reward'] for e in episodes])} | "
            f"{ops['add']} / {ops['edit']} / {ops['delete']} / {ops['none']} / {ops['empty']} | {applied} | "
            f"{len(final)} | {stale} |")


def main(folders: list[str]) -> None:
    print("| world | writer | similar | dissimilar | note tokens (mean / end) | reward | "
          "add / EDIT / DELETE / NONE / empty | carried out | notes at end | stale at end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for f in folders:
        print(row(Path(f)))


if __name__ == "__main__":
    main(sys.argv[1:])
