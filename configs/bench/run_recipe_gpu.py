"""The recipe comparison at a larger size on one GPU: one command, one folder.

    python configs/bench/run_recipe_gpu.py                      # all models, cuda
    python configs/bench/run_recipe_gpu.py --size tiny --device cpu --out /tmp/x   # smoke test

Every model of ``configs/bench/recipe/`` is trained with the same larger task and
model sizes (16-pair MQAR, vocabulary 256, 256-token training sequences, width
128, 4 heads, window / segment 64), then evaluated at 1x, 2x, 4x, 8x and 16x the
training length. Everything lands under ``--out``: the configs used, the runs
(checkpoints and metrics), the accuracy JSON and PNG of every model and length
(``<length>/<kind>-mqar.json``), a log and
``summary.md`` (the table of ``summarize_recipe.py``). A model that fails is
logged and the others go on; the exit status is 1 if any failed.

Target: under 10 minutes on one H200 for the eight models (an estimate from the
CPU step times, not yet measured on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ["transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "ttt"]

# Overrides of the CPU recipe, by size. "tiny" keeps the recipe's sizes and runs a
# few steps on a couple of sequences: it checks the pipeline, not the models.
SIZES = {
    "large": {
        "task": {"vocab_size": 256, "num_kv_pairs": 16},
        "model": {"vocab_size": 256, "dim": 128, "n_heads": 4, "window": 64,
                  "segment_len": 64, "memory_chunk": 16},
        "train": {"steps": 2000, "batch_size": 64, "seq_len": 256, "warmup_steps": 100,
                  "log_every": 50},
        "n": 100,
    },
    "tiny": {"task": {}, "model": {}, "train": {"steps": 3, "batch_size": 4, "log_every": 1},
             "n": 2},
}


def config_for(kind: str, size: dict, out: Path) -> dict:
    base = tomllib.loads((HERE / "recipe" / f"{kind}.toml").read_text())
    base["name"] = f"{base['name']}-gpu"
    base["model"].update(size["model"])
    base["task"]["options"].update(size["task"])
    base["train"].update(size["train"])
    base["train"]["checkpoint_every"] = base["train"]["steps"]
    base["train"]["out_dir"] = str(out / "runs" / kind)
    return base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="large")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("bench-results/recipe-gpu"))
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="comma-separated models: files of configs/bench/recipe without .toml")
    args = ap.parse_args()
    size = SIZES[args.size]
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if not (HERE / "recipe" / f"{k}.toml").exists()]
    if unknown:
        print(f"unknown kinds {unknown}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    out = args.out
    (out / "configs").mkdir(parents=True, exist_ok=True)
    log = (out / "log.txt").open("a")
    lifelong = [sys.executable, "-m", "lifelong"]
    failed, times = [], {}
    for kind in kinds:
        cfg = config_for(kind, size, out)
        seq_len = cfg["train"]["seq_len"]
        lengths = ",".join(str(seq_len * m) for m in (1, 2, 4, 8, 16))
        path = out / "configs" / f"{kind}.yaml"
        path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML: no writer needed
        t0 = time.perf_counter()
        train = lifelong + ["train", str(path), "--no-progress", "--device", args.device]
        log.write(f"$ {' '.join(train[1:])}\n")
        log.flush()
        if subprocess.run(train, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            failed.append(kind)
            print(f"FAILED: {kind} training (see {out / 'log.txt'})", file=sys.stderr)
        else:
            for length in lengths.split(","):  # one call per length: an overflow keeps the rest
                cmd = lifelong + ["bench", "run", "--model", str(out / "runs" / kind),
                                  "--suite", "mqar", "--lengths", length, "--n", str(size["n"]),
                                  "--device", args.device, "--out", str(out / length)]
                log.write(f"$ {' '.join(cmd[1:])}\n")
                log.flush()
                if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                    failed.append(f"{kind}@{length}")
                    print(f"FAILED: {kind} at {length} tokens (see {out / 'log.txt'})", file=sys.stderr)
        times[kind] = round(time.perf_counter() - t0, 1)
        print(f"{kind}: {times[kind]} s", flush=True)
    sys.path.insert(0, str(HERE))
    from summarize_recipe import main as summarize

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summarize(out, out / "runs")
    (out / "summary.md").write_text(
        f"size {args.size}, device {args.device}; seconds per model (train + eval): "
        f"{json.dumps(times)}\n{buf.getvalue()}"
    )
    print(buf.getvalue())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
