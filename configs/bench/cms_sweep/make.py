"""Write the CMS level sweep's configs (BENCHMARKS.md, "CMS levels"): Hope-Attention on
MQAR with 1-4 CMS levels x the slowest level's update period, everything else as in
configs/bench/mqar/hope_attention.toml (same param_budget, so more levels means
narrower ones). Level periods halve from the slowest: L levels, slowest C ->
C/2^(L-1), ..., C/2, C. Run from the repository root:

    python configs/bench/cms_sweep/make.py          # rewrites configs/bench/cms_sweep/*.toml
    sh configs/bench/cms_sweep/run.sh               # trains and evaluates them (hours on 2 cores)
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "mqar" / "hope_attention.toml"
LEVELS = (1, 2, 3, 4)
SLOWEST = (64, 256)


def periods(levels: int, slowest: int) -> list[int]:
    return [slowest // 2 ** (levels - 1 - i) for i in range(levels)]


def main() -> None:
    base = BASE.read_text()
    for n in LEVELS:
        for slow in SLOWEST:
            name = f"L{n}-C{slow}"
            text = re.sub(r"cms_chunks = \[[^\]]*\]", f"cms_chunks = {periods(n, slow)}", base)
            text = text.replace('name = "mqar-hope-attention"', f'name = "cms-sweep-{name}"')
            text = text.replace('out_dir = "runs/bench/mqar/hope_attention"',
                                f'out_dir = "runs/bench/cms_sweep/{name}"')
            text = re.sub(r"^# .*\n# .*\n", f"# CMS level sweep: {n} level(s), periods {periods(n, slow)} "
                          "(written by make.py from ../mqar/hope_attention.toml)\n", text, count=1)
            (HERE / f"{name}.toml").write_text(text)


if __name__ == "__main__":
    main()
