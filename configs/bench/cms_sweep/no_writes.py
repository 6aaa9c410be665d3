"""The sweep's ablation: each trained CMS model evaluated again with its in-context
writes switched off (``in_context_updates = False``: the levels keep the weights the
outer training gave them), on the same MQAR sequences as ``lifelong bench run``
(n = 100 per length, seed 0). Run from the repository root after run.sh:

    python configs/bench/cms_sweep/no_writes.py OUT.json RUN [RUN ...]   # RUN: runs/bench/cms_sweep/L2-C32

Adds {run: {"accuracy": {length: accuracy}, "eta": [[η per level] per block]}} to
OUT.json (kept: the runs already in it), with the learning rates η^(ℓ) the outer training left each level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lifelong.bench import evaluate as ev
from lifelong.train.checkpoint import load_checkpoint

LENGTHS = [64, 128, 256, 512, 1024]


def main(out: str, runs: list[str]) -> None:
    torch.set_num_threads(1)
    path = Path(out)
    results = json.loads(path.read_text()) if path.exists() else {}
    for run in runs:
        net, meta = load_checkpoint(f"{run}/model", device="cpu")
        net.in_context_updates = False
        report = ev.evaluate(net, ev.tasks_for_model(["mqar"], meta), LENGTHS, 100, 0, "cpu")
        results[run] = {
            "accuracy": {str(n): report["results"]["mqar"][str(n)]["accuracy"] for n in LENGTHS},
            "eta": [[float(x) for x in block.mlp.lrs().detach()] for block in net.blocks],
        }
        print(run, results[run], flush=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
