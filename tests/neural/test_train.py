"""The training loop: exact resume, checkpoints that load, metrics, configs, the CLI,
and data-parallel training with two CPU processes (gloo) equal to one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.errors import ConfigError, NotFoundError
from lifelong.neural.config import ModelConfig
from lifelong.train.checkpoint import load_checkpoint
from lifelong.train.config import RunConfig, TaskConfig, TrainConfig, load_config
from lifelong.train.lm import build_task, lr_factor, train

REPO = Path(__file__).resolve().parents[2]


def tiny_run(out_dir: Path, kind: str = "mag", steps: int = 8, **train_over) -> RunConfig:
    t = dict(steps=steps, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, log_every=2,
             seed=11, out_dir=str(out_dir))
    t.update(train_over)
    return RunConfig(
        name=f"test-{kind}",
        model=ModelConfig(kind=kind, dim=32, n_layers=2, n_heads=4, window=8, segment_len=8,
                          n_persistent=2, memory_chunk=4),
        task=TaskConfig(name="mqar", options={"vocab_size": 32, "num_kv_pairs": 4}),
        train=TrainConfig(**t),
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_stop_and_resume_continues_the_run_exactly(tmp_path: Path) -> None:
    whole = train(tiny_run(tmp_path / "whole"))
    cfg = tiny_run(tmp_path / "split")
    first = train(cfg, until_step=3)
    assert first.step == 3
    other = RunConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "window": 4}})
    with pytest.raises(ConfigError, match="another model"):
        train(other, resume=True)
    second = train(cfg, resume=True)
    assert second.step == 8
    assert first.losses + second.losses == whole.losses  # bit-for-bit, not approximately
    a, b = _weights(whole.model), _weights(second.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg)  # a fresh run never overwrites an earlier one
    # The metrics of the resumed run read like one run's.
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").open()]
    assert steps == [2, 3, 4, 6, 8]


def test_checkpoint_loads_the_trained_model_with_its_task(tmp_path: Path) -> None:
    result = train(tiny_run(tmp_path, kind="deltanet", steps=3))
    model, meta = load_checkpoint(tmp_path)  # a run directory: its newest checkpoint
    assert meta["step"] == 3
    assert meta["task"]["name"] == "mqar" and meta["task"]["vocab_size"] == 32
    assert meta["tokenizer"] is None  # MQAR has its own vocabulary
    ids = torch.randint(0, 32, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], result.model.eval()(ids)[0], rtol=0, atol=0)
    with pytest.raises(NotFoundError):
        load_checkpoint(tmp_path / "nothing-here")


def test_text_suite_trains_on_a_mixture_and_records_its_tokenizer(tmp_path: Path) -> None:
    cfg = tiny_run(tmp_path, kind="swa", steps=1, seq_len=640, batch_size=3)
    cfg.task = TaskConfig(name="s_niah", options={"tokenizer": "byte"})
    task = build_task(cfg)
    inputs, labels = task.sample_batch(3, 640, torch.Generator().manual_seed(0))
    assert inputs.shape == labels.shape == (3, 640)
    train(cfg)
    _, meta = load_checkpoint(tmp_path)
    assert meta["tokenizer"] == "byte" and meta["task"]["name"] == "s_niah"
    assert meta["model"]["vocab_size"] == task.vocab_size


def test_schedule_warms_up_linearly_then_decays_to_the_floor() -> None:
    factors = [lr_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert factors[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_config_files_round_trip_and_reject_typos(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "bench" / "mqar" / "mac.toml")
    assert cfg.model.kind == "mac" and cfg.task.name == "mqar"
    assert cfg.model.param_budget == 640_000 and cfg.train.seq_len == 256
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nkind = "mac"\nwindw = 64\n')
    with pytest.raises(ConfigError, match="windw"):
        load_config(bad)
    yaml_cfg = tmp_path / "run.yaml"
    yaml_cfg.write_text("name: y\nmodel: {kind: swa, window: 16}\ntrain: {steps: 5}\n")
    loaded = load_config(yaml_cfg)
    assert loaded.model.window == 16 and loaded.train.steps == 5
    with pytest.raises(ConfigError, match="unknown model kind"):
        ModelConfig(kind="rnn")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_cli_trains_a_shipped_tiny_config_and_resumes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lifelong.cli.main", "train", str(REPO / "configs" / "tiny" / "lmm.toml"),
           "--out-dir", str(tmp_path), "--no-progress"]
    done = subprocess.run(cmd + ["--stop-at", "4"], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert "step 4/20" in done.stdout
    done = subprocess.run(cmd + ["--resume", "--steps", "6"], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")  # the command draws the curve
    assert "step 6/6" in done.stdout
    _, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 6 and meta["run"]["model"]["kind"] == "lmm"
    # A user mistake is one message with what to do, not a traceback.
    bad = subprocess.run([sys.executable, "-m", "lifelong.cli.main", "train", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, env=_env())
    assert bad.returncode == 1 and "config file not found" in bad.stderr and "Traceback" not in bad.stderr


def test_ddp_on_two_cpu_processes_equals_one_process(tmp_path: Path) -> None:
    cfg = tiny_run(tmp_path / "ddp", kind="mac", steps=4, device="cpu")
    config_file = tmp_path / "ddp.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lifelong.cli.main", "train", str(config_file), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_model, _ = load_checkpoint(tmp_path / "ddp")

    single = train(tiny_run(tmp_path / "single", kind="mac", steps=4))
    # Each rank trains on its half of the global batch; averaged gradients equal the
    # whole batch's, so the weights agree up to float32 summation order.
    a, b = _weights(ddp_model), _weights(single.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ddp_losses = [json.loads(line)["loss"] for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    assert ddp_losses == pytest.approx(single.losses[1::2], rel=1e-4)
