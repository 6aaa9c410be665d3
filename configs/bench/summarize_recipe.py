"""Markdown table of the recipe comparison from what run_recipe.sh wrote.

    python configs/bench/summarize_recipe.py [bench-results/recipe] [runs/bench/recipe]

run_recipe.sh writes one folder per length (OUT/<length>/<kind>-mqar.json), so a
model that fails at one length keeps its other results.

For each model: final training loss (mean of the losses logged over the last 50
steps), training speed (tokens/s), and accuracy at each evaluated length as the mean over
the query positions of n sequences ± its standard error over the sequences.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

KINDS = ["transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "ttt", "ttt_dynamic_eval", "hope",
         "hope_attention"]


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


def load(out: Path) -> dict[str, dict[int, dict]]:
    """results[kind][length] from OUT/<length>/<kind>-mqar.json (one file per length)."""
    results: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("*/*-mqar.json")):
        kind = path.name.removesuffix("-mqar.json")
        report = json.loads(path.read_text())
        for length, r in next(iter(report["results"].values())).items():
            results.setdefault(kind, {})[int(length)] = {**r, "n_asked": report["n"]}
    return results


def main(out: Path, runs: Path) -> None:
    results = load(out)
    if not results:
        print(f"no results in {out}")
        return
    lengths = sorted({x for r in results.values() for x in r})
    n = max(r["n_asked"] for res in results.values() for r in res.values())
    print(f"\nmqar (n={n} sequences per length; mean ± standard error over sequences; "
          "– : no result at that length, e.g. the memory overflowed)\n")
    print("| model | final loss | train tok/s | " + " | ".join(str(x) for x in lengths) + " |")
    print("|---|---:|---:|" + "---:|" * len(lengths))
    for kind in KINDS + sorted(set(results) - set(KINDS)):
        if kind not in results:
            continue
        loss, speed = training(runs / kind)
        cells = " | ".join(cell(results[kind][x]) if x in results[kind] else "–" for x in lengths)
        loss_s = f"{loss:.3f}" if loss is not None else "–"
        speed_s = f"{speed:,.0f}" if speed else "–"
        print(f"| {kind} | {loss_s} | {speed_s} | {cells} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0] if args else "bench-results/recipe"),
         Path(args[1] if len(args) > 1 else "runs/bench/recipe"))
