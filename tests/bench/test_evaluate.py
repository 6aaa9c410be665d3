"""Scoring by length: an oracle scores 1, a constant model scores ~0; reports and the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lifelong.bench import evaluate as ev
from lifelong.data.registry import get_task
from lifelong.errors import ConfigError


class NeedleOracle(nn.Module):
    """Reads the needle for the asked key out of the input ids and says its value.

    A real module driven only by ``input_ids``: it decodes the prompt, finds the
    needle, and puts all logit mass on the next token of " VALUE." then eos.
    """

    def __init__(self, tokenizer, stateful: bool = False) -> None:
        super().__init__()
        self.tok = tokenizer
        self.stateful = stateful

    def _next(self, ids: list[int]) -> int:
        text = self.tok.decode(ids)
        cut = text.rfind("mentioned in the provided text are")
        prompt, said = (
            text[: cut + len("mentioned in the provided text are")],
            text[cut:].split(" are", 1)[1],
        )
        key = re.search(r"magic \w+ for ([^\W\d_]+-[^\W\d_]+) mentioned", prompt).group(1)
        value = re.search(rf"for {re.escape(key)} is: ([0-9a-f-]+)\.", prompt).group(1)
        target = self.tok.encode(" " + value + ".") + [self.tok.eos_id]
        done = len(self.tok.encode(said)) if said else 0
        return target[min(done, len(target) - 1)]

    def forward(self, input_ids, state=None):
        seen = (state or []) + input_ids[0].tolist()
        last = torch.zeros(self.tok.vocab_size)
        last[self._next(seen)] = 1.0
        logits = last.expand(1, input_ids.shape[1], -1)  # only the last position is read
        return (logits, seen) if self.stateful else logits


class MQAROracle(nn.Module):
    """Predicts, at every position, the value paired with the current token earlier on."""

    def __init__(self, vocab: int, pairs: int) -> None:
        super().__init__()
        self.vocab, self.pairs = vocab, pairs

    def forward(self, input_ids, state=None):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            x = input_ids[b].tolist()
            table = {x[2 * i]: x[2 * i + 1] for i in range(self.pairs)}
            for t in range(T):
                if x[t] in table:
                    logits[b, t, table[x[t]]] = 1.0
        return logits, None


class Constant(nn.Module):
    def __init__(self, vocab: int, token: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[token] = 1.0

    def forward(self, input_ids, state=None):
        return self.bias.expand(*input_ids.shape, -1), None


def test_oracle_scores_one_and_constant_scores_zero_on_niah():
    tasks = {name: get_task(name) for name in ("s_niah_1", "s_niah_3", "mk_niah")}
    tok = tasks["s_niah_1"].tokenizer
    for oracle in (NeedleOracle(tok), NeedleOracle(tok, stateful=True)):
        report = ev.evaluate(oracle, tasks, [256, 512], n=3, seed=0)
        for by_len in report["results"].values():
            assert [by_len[k]["accuracy"] for k in ("256", "512")] == [1.0, 1.0]
    # A length that cannot hold the prompt is reported as skipped, not fatal.
    report = ev.evaluate(NeedleOracle(tok), {"s_niah_1": tasks["s_niah_1"]}, [0, 256], n=1, seed=0)
    assert report["results"]["s_niah_1"]["0"]["accuracy"] is None
    assert "length 0" in report["results"]["s_niah_1"]["0"]["skipped"]
    assert ev.table_rows(report)[1] == [["s_niah_1", "—", "1.000"]]
    digit = tok.encode("7")[0]
    report = ev.evaluate(Constant(tok.vocab_size, digit), tasks, [256], n=3, seed=0)
    assert all(r["256"]["accuracy"] == 0.0 for r in report["results"].values())


def test_oracle_scores_one_and_constant_near_chance_on_mqar():
    task = get_task("mqar", vocab_size=128, num_kv_pairs=8)
    report = ev.evaluate(MQAROracle(128, 8), {"mqar": task}, [64, 256], n=4, seed=1)
    assert report["results"]["mqar"]["64"]["accuracy"] == 1.0
    assert report["results"]["mqar"]["256"]["accuracy"] == 1.0
    report = ev.evaluate(Constant(128, 100), {"mqar": task}, [256], n=8, seed=1)
    assert report["results"]["mqar"]["256"]["accuracy"] < 0.1


def test_report_files_and_table(tmp_path):
    task = get_task("mqar", vocab_size=64, num_kv_pairs=4)
    report = ev.evaluate(MQAROracle(64, 4), {"mqar": task, "mqar2": task}, [32, 1024], n=2, seed=0)
    header, rows = ev.table_rows(report)
    assert header == ["task", "32", "1k"]
    assert ev.format_length(0) == "0k" and ev.format_length(3000) == "3000"
    assert rows[-1] == ["mean", "1.000", "1.000"]
    json_path, png_path = ev.write_report(report, tmp_path, "r")
    saved = json.loads(json_path.read_text())["results"]["mqar"]["1024"]
    assert saved["n"] == 2 and saved["prompt_tokens_per_s"] > 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tasks_follow_the_checkpoint_meta():
    meta = {
        "task": {"name": "mqar", "options": {"vocab_size": 96, "num_kv_pairs": 6}},
        "tokenizer": None,
    }
    tasks = ev.tasks_for_model(["mqar"], meta)
    assert tasks["mqar"].vocab_size == 96 and tasks["mqar"].config.num_kv_pairs == 6
    meta = {"task": {"name": "s_niah_1", "options": {"tokenizer": "byte"}}, "tokenizer": "byte"}
    tasks = ev.tasks_for_model(["s_niah_1", "babilong_qa1"], meta)
    assert all(t.tokenizer.spec == "byte" for t in tasks.values())
    # An MQAR model cannot read a text suite: said up front, not as an index error.
    meta = {"task": {"name": "mqar", "options": {}}, "model": {"vocab_size": 256}}
    with pytest.raises(ConfigError, match="vocabulary"):
        ev.tasks_for_model(["s_niah_1"], meta)


def test_bench_sample_prints_an_example():
    from lifelong.cli.main import app

    result = CliRunner().invoke(
        app, ["bench", "sample", "s_niah_2", "--length", "300", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "One of the special magic numbers for" in result.output
    assert re.search(r"answer: \d{7}\.", result.output)


def test_bench_run_on_a_trained_checkpoint(tmp_path):
    from lifelong.cli.main import app
    from lifelong.train.checkpoint import load_checkpoint
    from lifelong.train.config import RunConfig
    from lifelong.train.lm import train

    cfg = RunConfig.from_dict(
        {
            "name": "tiny",
            "model": {"kind": "transformer", "dim": 32, "n_layers": 1, "n_heads": 2},
            "task": {"name": "mqar", "options": {"vocab_size": 64, "num_kv_pairs": 4}},
            "train": {
                "steps": 2,
                "batch_size": 4,
                "seq_len": 32,
                "warmup_steps": 1,
                "out_dir": str(tmp_path / "run"),
                "device": "cpu",
            },
        }
    )
    train(cfg)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "run",
            "--model",
            str(tmp_path / "run"),
            "--suite",
            "mqar",
            "--lengths",
            "32,64",
            "--n",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy by length" in result.output
    (json_file,) = out.glob("*.json")
    report = json.loads(json_file.read_text())
    # The CLI's numbers are the library's numbers on the same checkpoint.
    model, meta = load_checkpoint(tmp_path / "run")
    again = ev.evaluate(model, ev.tasks_for_model(["mqar"], meta), [32, 64], n=3, seed=0)
    for L in ("32", "64"):
        assert report["results"]["mqar"][L]["scores"] == again["results"]["mqar"][L]["scores"]
    assert list(out.glob("*.png"))


def test_text_outputs_are_the_models_own_greedy_continuation():
    from lifelong.neural.config import ModelConfig
    from lifelong.neural.lm import CausalLM

    task = get_task("babilong_qa1")
    torch.manual_seed(0)
    model = CausalLM(
        ModelConfig(kind="transformer", vocab_size=task.vocab_size, dim=32, n_layers=1, n_heads=2)
    ).eval()
    report = ev.evaluate(model, {"qa1": task}, [256], n=2, seed=0)
    for ex, said in zip(task.eval_examples(2, 256, 0), report["results"]["qa1"]["256"]["outputs"]):
        ids = torch.tensor([ex.input_ids])
        new = model.generate(ids, max_new_tokens=ex.max_new_tokens)[0, ids.shape[1] :].tolist()
        if task.tokenizer.eos_id in new:
            new = new[: new.index(task.tokenizer.eos_id)]
        assert said == task.tokenizer.decode(new)


def test_streaming_in_chunks_scores_like_one_pass():
    from lifelong.neural.config import ModelConfig
    from lifelong.neural.lm import CausalLM

    torch.manual_seed(0)
    task = get_task("mqar", vocab_size=64, num_kv_pairs=4)
    model = CausalLM(
        ModelConfig(kind="transformer", vocab_size=64, dim=32, n_layers=1, n_heads=2)
    ).eval()
    whole = ev.evaluate(model, {"mqar": task}, [96], n=3, seed=0)
    chunked = ev.evaluate(model, {"mqar": task}, [96], n=3, seed=0, chunk=32)
    assert whole["results"]["mqar"]["96"]["scores"] == chunked["results"]["mqar"]["96"]["scores"]
    text = get_task("s_niah_1")
    model = CausalLM(
        ModelConfig(kind="transformer", vocab_size=text.vocab_size, dim=32, n_layers=1, n_heads=2)
    ).eval()
    whole = ev.evaluate(model, {"t": text}, [256], n=2, seed=0)
    chunked = ev.evaluate(model, {"t": text}, [256], n=2, seed=0, chunk=64)
    assert whole["results"]["t"]["256"]["outputs"] == chunked["results"]["t"]["256"]["outputs"]
