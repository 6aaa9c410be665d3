"""The recipe comparison (configs/bench/recipe): every model gets the same task,
sizes and training; the GPU script's configs load; the summary's spread is right."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from lifelong.train.config import load_config

BENCH = Path(__file__).resolve().parents[2] / "configs" / "bench"
KINDS = ["transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "hope", "hope_attention", "ttt"]
# the same kind with another option: the paper's ablations
VARIANTS = {"ttt_dynamic_eval": ("ttt", {"ttt_mode": "dynamic_eval"})}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_recipe_model_gets_the_same_task_sizes_and_training() -> None:
    configs = {p.stem: load_config(p) for p in sorted((BENCH / "recipe").glob("*.toml"))}
    assert sorted(configs) == sorted(KINDS + list(VARIANTS))
    ref = configs["transformer"]
    assert ref.task.options == {"vocab_size": 64, "num_kv_pairs": 4, "power_a": 1.0,
                                "random_non_queries": False}
    assert (ref.train.steps, ref.train.batch_size, ref.train.seq_len, ref.train.lr) == (1000, 32, 64, 3e-3)
    shared = ("vocab_size", "dim", "n_layers", "n_heads", "window", "segment_len", "memory_chunk")
    for kind, cfg in configs.items():
        base, options = VARIANTS.get(kind, (kind, {}))
        assert cfg.model.kind == base
        if base == "ttt":  # one learning block of two, 4 inner steps per window
            want = {"ttt_mini_batch": 8, "ttt_mode": "e2e", "ttt_lr": 1.0, "ttt_clip": 1.0, **options}
            assert {k: getattr(cfg.model, k) for k in want} == want, kind
            assert cfg.model.ttt_suffix == 1
        assert cfg.task == ref.task, kind
        assert cfg.train.out_dir == f"runs/bench/recipe/{kind}"
        assert replace(cfg.train, out_dir="") == replace(ref.train, out_dir=""), kind
        assert [getattr(cfg.model, f) for f in shared] == [getattr(ref.model, f) for f in shared], kind
        if kind in ("lmm", "mac", "mag", "mal"):  # the bounded memory rule, not the paper's
            assert cfg.model.memory_options == {"update": "bounded", "max_lr": 0.5}, kind


@pytest.mark.parametrize("size", ["tiny", "large"])
def test_the_gpu_script_writes_configs_that_load(size: str, tmp_path: Path) -> None:
    gpu = _module("run_recipe_gpu")
    for kind in gpu.KINDS + list(VARIANTS):
        cfg = gpu.config_for(kind, gpu.SIZES[size], tmp_path)
        path = tmp_path / f"{kind}.yaml"
        path.write_text(json.dumps(cfg))
        loaded = load_config(path)
        assert loaded.model.kind == VARIANTS.get(kind, (kind,))[0] and loaded.train.out_dir == str(tmp_path / "runs" / kind)
        if size == "large":
            assert loaded.train.seq_len == 256 and loaded.task.options["num_kv_pairs"] == 16
            assert loaded.model.vocab_size == loaded.task.options["vocab_size"] == 256
        else:
            assert loaded.train.steps == 3 and loaded.model.dim == 64


def test_the_summary_reports_mean_and_standard_error_over_sequences(tmp_path: Path) -> None:
    summary = _module("summarize_recipe")
    scores = [1.0, 0.5, 0.25, 0.0]
    mean = sum(scores) / 4
    se = math.sqrt(sum((s - mean) ** 2 for s in scores) / 3 / 4)
    assert summary.cell({"accuracy": mean, "scores": scores}) == f"{mean:.3f} ± {se:.3f}"
    assert summary.cell({"accuracy": None, "skipped": "too short"}) == "–"
    run = tmp_path / "runs" / "swa"
    run.mkdir(parents=True)
    rows = [{"step": s, "loss": 10.0 - s / 10, "tokens_per_s": 100.0 * s} for s in (25, 50, 75, 100)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    loss, speed = summary.training(run)
    assert loss == pytest.approx((10 - 7.5 + 10 - 10.0) / 2)  # steps 75 and 100 are the last 50
    assert speed == pytest.approx(6250.0)  # the mean of every logged speed
    # One folder per length; a length that failed (no file) is a dash, the rest stay.
    for length, acc in ((64, 1.0), (128, 0.5)):
        (tmp_path / "out" / str(length)).mkdir(parents=True)
        report = {"lengths": [length], "n": 2,
                  "results": {"mqar": {str(length): {"accuracy": acc, "scores": [acc, acc]}}}}
        (tmp_path / "out" / str(length) / "swa-mqar.json").write_text(json.dumps(report))
    (tmp_path / "out" / "256").mkdir()
    report = {"lengths": [256], "n": 2, "results": {"mqar": {"256": {"accuracy": 0.0, "scores": [0.0, 0.0]}}}}
    (tmp_path / "out" / "256" / "lmm-mqar.json").write_text(json.dumps(report))
    assert summary.load(tmp_path / "out")["swa"][128]["scores"] == [0.5, 0.5]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary.main(tmp_path / "out", tmp_path / "runs")
    rows = {line.split(" | ")[0]: line for line in buf.getvalue().splitlines() if line.startswith("| ")}
    assert rows["| swa"] == "| swa | 1.250 | 6,250 | 1.000 ± 0.000 | 0.500 ± 0.000 | – |"
    assert rows["| lmm"] == "| lmm | – | – | – | – | 0.000 ± 0.000 |"
