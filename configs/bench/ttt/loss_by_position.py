"""E2E-TTT against the same sliding-window model: next-token loss by position.

The data: each sequence is a random segment of ``SEGMENT`` tokens repeated to fill it.
The segment is longer than what the stacked windows reach (4 blocks × a window of 8:
28 tokens back), so from the second repeat on, the next token is predictable only by
remembering the segment: attention cannot see the earlier copy, a dynamic MLP trained
on the context can. (With a 24-token segment and a window of 16 the SWA model solved
the task through its 4 stacked windows, reach 60.)

Two models of one configuration (``kind = "ttt"``, same seed, data, steps) are trained:

- ``e2e``: the inner loop on in training, differentiated through (meta-learned W_0);
- ``off``: no inner loop in training (the SWA model).

and read held-out sequences in four ways: ``e2e`` (inner loop on), ``e2e, frozen``
(inner loop off: W_0 alone), ``off`` (SWA), ``off + dynamic eval`` (the paper's
ablation without meta-learning: the inner loop on weights trained without it).

    flock CPU_LOCK env OMP_NUM_THREADS=1 python configs/bench/ttt/loss_by_position.py OUT_DIR

writes ``OUT_DIR/loss_by_position.json`` and ``.png`` and prints the markdown tables;
``python configs/bench/ttt/loss_by_position.py --plot REPORT.json`` redraws the figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lifelong.atomic import atomic_write_bytes
from lifelong.neural.config import ModelConfig
from lifelong.plots import new_figure, png_bytes
from lifelong.train.config import RunConfig, TaskConfig, TrainConfig
from lifelong.train.lm import train

VOCAB, SEGMENT, WINDOW, B = 64, 48, 8, 8
SEQ_LEN, EVAL_LEN = 192, 384
MODEL = ModelConfig(kind="ttt", vocab_size=VOCAB, dim=64, n_layers=4, n_heads=4, window=WINDOW,
                    ttt_mini_batch=B, ttt_lr=1.0, ttt_clip=1.0, param_budget=200_000)
TRAIN = {"steps": int(os.environ.get("TTT_BENCH_STEPS", "400")), "batch_size": 16, "seq_len": SEQ_LEN,
         "lr": 3e-3, "warmup_steps": 40, "log_every": 50, "seed": 0}


class RepeatedSegment:
    """A random segment of ``SEGMENT`` tokens, repeated; every next token is a label."""

    vocab_size = VOCAB
    tokenizer = None

    def sample_batch(self, batch_size: int, seq_len: int, generator: torch.Generator):
        seg = torch.randint(1, VOCAB, (batch_size, SEGMENT), generator=generator)
        reps = -(-(seq_len + 1) // SEGMENT)
        seq = seg.repeat(1, reps)[:, : seq_len + 1]
        return seq[:, :-1], seq[:, 1:].clone()


def per_position_loss(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(0)


def plot(report: dict) -> bytes:
    """Loss by position (averaged over windows of 8 tokens), one line per reading."""
    fig, ax = new_figure()
    for name, curve in report["curves"].items():
        if name.endswith("(s)"):
            continue
        xs = list(range(0, len(curve), 8))
        ax.plot(xs, [sum(curve[x : x + 8]) / len(curve[x : x + 8]) for x in xs], label=name)
    for rep in range(report["segment"], report["eval_len"], report["segment"]):
        ax.axvline(rep, color="0.85", lw=0.8)
    ax.axvline(report["train"]["seq_len"], color="k", ls="--", lw=0.8, label="training length")
    ax.set_xlabel("token position (grey: segment repeats)")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(f"E2E-TTT vs SWA: a {report['segment']}-token segment repeated, window {report['model']['window']}")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    models, speed = {}, {}
    for mode in ("e2e", "off"):
        cfg = RunConfig(name=f"repeat-ttt-{mode}", model=dataclasses.replace(MODEL, ttt_mode=mode),
                        task=TaskConfig(name="repeated_segment"),
                        train=TrainConfig(**TRAIN, out_dir=str(out / mode)))
        t0 = time.perf_counter()
        result = train(cfg, task=RepeatedSegment())
        speed[mode] = {"train_s": time.perf_counter() - t0,
                       "tokens_per_s": TRAIN["steps"] * TRAIN["batch_size"] * SEQ_LEN / (time.perf_counter() - t0),
                       "final_train_loss": sum(result.losses[-20:]) / 20,
                       "params": result.model.num_params()}
        models[mode] = result.model
    gen = torch.Generator().manual_seed(1234)
    x, y = RepeatedSegment().sample_batch(64, EVAL_LEN, gen)
    ids = torch.cat([x, y[:, -1:]], dim=1)
    curves = {}
    for name, mode, model, training in [("e2e", "e2e", models["e2e"], False),
                                        ("e2e, frozen", "off", models["e2e"], False),
                                        ("off (SWA)", "off", models["off"], False),
                                        ("off + dynamic eval", "dynamic_eval", models["off"], False)]:
        model.config.ttt_mode = mode
        model.train(training)
        t0 = time.perf_counter()
        curves[name] = per_position_loss(model, ids).tolist()
        curves[name + " (s)"] = time.perf_counter() - t0
    bins = [(0, SEGMENT), (SEGMENT, 2 * SEGMENT), (2 * SEGMENT, 4 * SEGMENT), (4 * SEGMENT, EVAL_LEN)]
    report = {"model": dataclasses.asdict(MODEL), "train": TRAIN, "segment": SEGMENT, "eval_len": EVAL_LEN,
              "speed": speed, "curves": curves, "bins": bins}
    out.mkdir(parents=True, exist_ok=True)
    (out / "loss_by_position.json").write_text(json.dumps(report, indent=1))
    atomic_write_bytes(out / "loss_by_position.png", plot(report))
    print("| reading | " + " | ".join(f"tokens {a}–{b - 1}" for a, b in bins) + " | eval s |")
    print("|---|" + "---:|" * (len(bins) + 1))
    for name, c in curves.items():
        if name.endswith("(s)"):
            continue
        cells = [sum(c[a:b]) / (b - a) for a, b in bins]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + f" | {curves[name + ' (s)']:.2f} |")
    print()
    print("| trained | params | train tokens/s | final train loss |")
    print("|---|---:|---:|---:|")
    for mode, s in speed.items():
        print(f"| {mode} | {s['params']:,} | {s['tokens_per_s']:.0f} | {s['final_train_loss']:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        src = Path(sys.argv[2])
        atomic_write_bytes(src.with_suffix(".png"), plot(json.loads(src.read_text())))
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/ttt"))
