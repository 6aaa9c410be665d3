"""Seconds per training step of run configs, interleaved, at a given batch x length.

    python configs/bench/ttt/train_step.py CONFIG [CONFIG ...] --batch 16 --seq 256 --steps 2 --rounds 2

One torch thread; random token ids; AdamW; one untimed warm-up step per model, then
``--steps`` timed steps, the models taken in turn for ``--rounds`` rounds (so a change in
the machine's load hits them alike). Prints one line per model and round.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lifelong.neural.lm import build_model
from lifelong.train.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    for path in args.configs:
        cfg = load_config(path)
        torch.manual_seed(0)
        model = build_model(cfg.model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq + 1),
                            generator=torch.Generator().manual_seed(0))
        runs.append((path, model, opt, ids))

    def step(model, opt, ids) -> None:
        logits, _ = model(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _, model, opt, ids in runs:
        step(model, opt, ids)  # warm-up
    for r in range(args.rounds):
        for path, model, opt, ids in runs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt, ids)
            dt = (time.perf_counter() - t0) / args.steps
            print(f"round {r}  {path}: {dt * 1000:.0f} ms/step, {args.batch * args.seq / dt:,.0f} tok/s", flush=True)


if __name__ == "__main__":
    main()
