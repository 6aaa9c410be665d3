"""Markdown table of the recipe comparison from what run_recipe.sh wrote.

    python configs/bench/summarize_recipe.py [bench-results/recipe] [runs/bench/recipe]

For each model: final training loss (mean of the losses logged over the last 50
steps), training speed (tokens/s), and accuracy at each evaluated length as the mean over
the query positions of n sequences ± its standard error over the sequences.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

KINDS = ["transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "hope", "hope_attention"]


def training(run: Path) -> tuple[float | None, float | None]:
    """Final loss (mean over the last 50 logged steps) and mean training tokens/s."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None, None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and "step" in r]
    if not rows:
        return None, None
    last = [r["loss"] for r in rows if r["step"] > rows[-1]["step"] - 50]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    return sum(last) / len(last), (sum(speeds) / len(speeds) if speeds else None)


def cell(result: dict) -> str:
    scores = result.get("scores") or []
    if result.get("accuracy") is None or not scores:
        return "–"
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / max(1, n - 1)
    return f"{mean:.3f} ± {math.sqrt(var / n):.3f}"


def main(out: Path, runs: Path) -> None:
    results = {}
    for kind in KINDS:
        path = out / f"{kind}-mqar.json"
        if path.exists():
            results[kind] = json.loads(path.read_text())
    if not results:
        print(f"no results in {out}")
        return
    first = next(iter(results.values()))
    lengths, n = first["lengths"], first["n"]
    task = next(iter(first["results"]))
    print(f"\n{task} (n={n} sequences per length; mean ± standard error over sequences)\n")
    print("| model | final loss | train tok/s | " + " | ".join(str(x) for x in lengths) + " |")
    print("|---|---:|---:|" + "---:|" * len(lengths))
    for kind in KINDS:
        if kind not in results:
            continue
        acc = results[kind]["results"][task]
        loss, speed = training(runs / kind)
        cells = " | ".join(cell(acc[str(x)]) for x in lengths)
        loss_s = f"{loss:.2f}" if loss is not None else "–"
        speed_s = f"{speed:,.0f}" if speed else "–"
        print(f"| {kind} | {loss_s} | {speed_s} | {cells} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0] if args else "bench-results/recipe"),
         Path(args[1] if len(args) > 1 else "runs/bench/recipe"))
