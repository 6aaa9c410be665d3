"""The recipe's TTT models read with their inner loop off: where does their recall come from?

    python configs/bench/ttt/recipe_inner_off.py [RUN ...] [--out bench-results/recipe] [--n 100]

For each trained run (default: runs/bench/recipe/ttt and runs/bench/recipe/ttt_dynamic_eval,
those that exist) the same weights are evaluated on the recipe's MQAR at 1x..16x the training
length with ``ttt_mode = "off"``: the sliding-window model with the dynamic MLPs fixed at
W_0, no learning at test time. The results land next to run_recipe.sh's, as
``OUT/<length>/<run>_inner_off-mqar.json`` (same format), so summarize_recipe.py shows them
as rows of their own. Run from the repository root, after run_recipe.sh.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from lifelong.bench import evaluate as ev
from lifelong.neural.lm import CausalLM
from lifelong.train.checkpoint import load_checkpoint

LENGTHS = [64, 128, 256, 512, 1024]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench-results/recipe"))
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = args.runs or [p for p in (Path("runs/bench/recipe/ttt"), Path("runs/bench/recipe/ttt_dynamic_eval"))
                         if p.exists()]
    for run in runs:
        net, meta = load_checkpoint(str(run / "model" if (run / "model").exists() else run))
        off = CausalLM(dataclasses.replace(net.config, ttt_mode="off"))
        off.load_state_dict(net.state_dict())
        assert not off.eval().ttt_active()
        tasks = ev.tasks_for_model(["mqar"], meta)
        for length in LENGTHS:
            report = ev.evaluate(off, tasks, [length], args.n, seed=0)
            label = f"{run.name}_inner_off"
            report.update(model=str(run), suite="mqar", title=f"{label}: mqar", step=meta.get("step"),
                          chance={name: ev.chance_level(task) for name, task in tasks.items()})
            path, _ = ev.write_report(report, args.out / str(length), f"{label}-mqar")
            print(f"{label} @ {length}: {report['results']['mqar'][str(length)]['accuracy']:.3f} ({path})",
                  flush=True)


if __name__ == "__main__":
    main()
