"""Write the CMS level sweep's configs (BENCHMARKS.md, "CMS levels"): Hope-Attention on
the comparison recipe's MQAR (configs/bench/recipe/hope_attention.toml: 4 pairs,
vocabulary 64, 64-token training sequences, width 64, 2 layers, 1,000 steps of
batch 32, lr 3e-3) with 1-4 CMS levels x the slowest level's update period.

Level periods halve from the slowest: L levels, slowest C -> C/2^(L-1), ..., C/2, C.
The slowest periods are 16 and 32: a level writes for the first time once C + 1
tokens are in (a step waits for the token after it), so in a 64-token training
sequence a level of period 32 writes once and one of period 64 never would -- its
learning rate would get no gradient. Every config has about the parameter count of
the recipe's one-level model: the levels' width ``mlp_hidden`` is solved here for
that budget (``lm.matched``) and written out, so more levels are narrower, and
L1-C16 builds exactly the recipe's model (same width, same initial weights).
Run from the repository root, with lifelong importable:

    python configs/bench/cms_sweep/make.py          # rewrites configs/bench/cms_sweep/*.toml
    sh configs/bench/cms_sweep/run.sh               # trains and evaluates them
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "recipe" / "hope_attention.toml"
LEVELS = (1, 2, 3, 4)
SLOWEST = (16, 32)


def periods(levels: int, slowest: int) -> list[int]:
    return [slowest // 2 ** (levels - 1 - i) for i in range(levels)]


def widths(base: str) -> dict[int, int]:
    """The levels' width for each number of levels, at the recipe model's parameter count."""
    import dataclasses

    from lifelong.neural.config import ModelConfig
    from lifelong.neural.lm import build_model, matched

    model = ModelConfig(**tomllib.loads(base)["model"])
    budget = build_model(model).num_params()
    return {n: matched(dataclasses.replace(model, cms_chunks=periods(n, max(SLOWEST))), budget).mlp_hidden
            for n in LEVELS}


def config_text(base: str, levels: int, slowest: int, hidden: int) -> str:
    name = f"L{levels}-C{slowest}"
    ps = periods(levels, slowest)
    text = base.replace('name = "recipe-hope_attention"', f'name = "cms-sweep-{name}"')
    text = text.replace("memory_chunk = 8\n",
                        f"memory_chunk = 8\nmlp_hidden = {hidden}\ncms_chunks = {ps}\n")
    text = text.replace('out_dir = "runs/bench/recipe/hope_attention"', f'out_dir = "runs/bench/cms_sweep/{name}"')
    header = (f"# CMS level sweep (BENCHMARKS.md, \"CMS levels\"): {levels} level(s), periods {ps}.\n"
              "# Written by make.py from ../recipe/hope_attention.toml; do not edit by hand.\n")
    return re.sub(r"\A(#.*\n)+", header, text)


def main() -> None:
    base = BASE.read_text()
    hidden = widths(base)
    for old in HERE.glob("L*-C*.toml"):
        old.unlink()
    for n in LEVELS:
        for slow in SLOWEST:
            (HERE / f"L{n}-C{slow}.toml").write_text(config_text(base, n, slow, hidden[n]))


if __name__ == "__main__":
    main()
