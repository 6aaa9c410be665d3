"""Where one training step of a model's time goes (BENCHMARKS.md, "Training speed
of the memory models").

    python configs/bench/profile_step.py configs/bench/mqar/mac.toml [more configs] [--rows 25]

For each config: the model at the config's batch and length, AdamW, two warm-up
steps, the mean time of two more, then one step under ``torch.profiler`` (CPU,
one thread) and its ops sorted by their own time.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lifelong.neural.lm import build_model
from lifelong.train.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.configs:
        cfg = load_config(path)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model)
        B, L = cfg.train.batch_size, cfg.train.seq_len
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (B, L + 1), generator=gen)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            logits, _ = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        step()
        start = time.perf_counter()
        step()
        step()
        seconds = (time.perf_counter() - start) / 2
        print(f"== {cfg.name} ({cfg.model.kind}): {B} × {L} tokens, step {seconds * 1e3:.0f} ms, "
              f"{B * L / seconds:,.0f} tok/s")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
