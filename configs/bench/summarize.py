"""Markdown tables of the comparison from what run_comparison.sh wrote.

    python configs/bench/summarize.py [bench-results/comparison]

For each task: final training loss (mean of the losses logged over the last 50
steps) and accuracy at each evaluated length.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KINDS = ["transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "hope", "hope_attention", "ttt"]
TASKS = {"mqar": "mqar", "niah": "s_niah"}


def final_loss(run: Path) -> float | None:
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    last = [r["loss"] for r in rows if r["step"] > steps[-1] - 50]
    return sum(last) / len(last)


def main(out: Path) -> None:
    for folder, suite in TASKS.items():
        results = {}
        for kind in KINDS:
            path = out / folder / f"{kind}-{suite}.json"
            if path.exists():
                results[kind] = json.loads(path.read_text())
        if not results:
            continue
        first = next(iter(results.values()))
        lengths, n = first["lengths"], first["n"]
        for task in first["results"]:  # a suite may hold several tasks (S-NIAH 1, 2, 3)
            print(f"\n{task} (n={n} per length)\n")
            print("| model | final loss | accuracy " + " / ".join(str(x) for x in lengths) + " |")
            print("|---|---:|---:|")
            for kind in KINDS:
                if kind not in results:
                    print(f"| {kind} | – | failed or not run |")
                    continue
                acc = results[kind]["results"][task]
                cells = " / ".join(f"{acc[str(x)]['accuracy']:.3f}" for x in lengths)
                loss = final_loss(Path("runs/bench") / folder / kind)
                print(f"| {kind} | {f'{loss:.2f}' if loss is not None else '–'} | {cells} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/comparison"))
