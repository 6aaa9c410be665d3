"""``save_pretrained`` / ``from_pretrained``: config.json + model.safetensors, loaded
strictly; ``load_checkpoint`` and ``lifelong bench run --model`` take such a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lifelong.errors import ConfigError, NotFoundError
from lifelong.neural import NeuralMemory, NeuralMemoryConfig
from lifelong.neural.config import ModelConfig
from lifelong.neural.lm import CausalLM
from lifelong.train.checkpoint import load_checkpoint
from lifelong.train.lm import train

from .test_train import tiny_run


@pytest.mark.parametrize("kind", ["transformer", "mac"])
def test_a_causal_lm_round_trips(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(kind=kind, vocab_size=40, dim=32, n_layers=2, n_heads=4, window=8,
                                 segment_len=8, n_persistent=2, memory_chunk=4)).eval()
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == kind and config["lifelong"]["class"] == "CausalLM"
    again = CausalLM.from_pretrained(folder)
    assert again.config == model.config and not again.training
    assert again.head.weight is again.embed.weight  # tied, as built
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], model(ids)[0], rtol=0, atol=0)


def test_a_neural_memory_round_trips(tmp_path: Path) -> None:
    memory = NeuralMemory(NeuralMemoryConfig(dim=16, heads=2, head_dim=8, chunk_size=4), seed=3)
    with torch.no_grad():
        memory.to_gates.bias.add_(0.25)  # not the initial values: the weights really travel
    memory.save_pretrained(tmp_path / "mem")
    again = NeuralMemory.from_pretrained(tmp_path / "mem")
    assert again.config == memory.config
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1, s1 = memory.eval()(x)
        y2, s2 = again(x)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)


def test_loading_is_strict_and_says_what_is_wrong(tmp_path: Path) -> None:
    model = CausalLM(ModelConfig(vocab_size=40, dim=32, n_heads=4))
    folder = model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="holds a CausalLM, not a NeuralMemory"):
        NeuralMemory.from_pretrained(folder)
    with pytest.raises(NotFoundError, match="no saved model"):
        CausalLM.from_pretrained(tmp_path / "nothing")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dim": 64}))  # weights of another size
    with pytest.raises(ConfigError, match="do not fit its config"):
        CausalLM.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "colour": "blue"}))
    with pytest.raises(ConfigError, match="does not fit ModelConfig"):
        CausalLM.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "lifelong"}))
    with pytest.raises(ConfigError, match="not saved by lifelong"):
        CausalLM.from_pretrained(folder)


def test_a_finished_run_leaves_a_model_folder_that_bench_run_reads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lifelong.cli.main import app

    result = train(tiny_run(tmp_path / "run", kind="transformer", steps=3))
    folder = tmp_path / "run" / "model"
    model, meta = load_checkpoint(folder)
    assert meta["step"] == 3 and meta["task"]["name"] == "mqar" and meta["path"] == str(folder)
    ids = torch.randint(0, 32, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], result.model.eval()(ids)[0], rtol=0, atol=0)
    assert CausalLM.from_pretrained(folder).config == model.config
    out = CliRunner().invoke(app, ["bench", "run", "--model", str(folder), "--suite", "mqar", "--lengths", "32",
                                   "--n", "2", "--out", str(tmp_path / "bench")])
    assert out.exit_code == 0, out.output
    assert list((tmp_path / "bench").glob("*.json"))
