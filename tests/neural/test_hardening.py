"""Weight memory under bad input: run configs with values of the wrong type,
memory states that hold NaN, and checkpoints that are damaged or crafted to run
code. Each is refused with a message that names what is wrong, and resuming
falls back to the newest intact checkpoint, still continuing the run exactly."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from lifelong.errors import CheckpointWarning, ConfigError, StateError
from lifelong.neural import MemoryState, NeuralMemory, NeuralMemoryConfig
from lifelong.neural.config import ModelConfig
from lifelong.train.checkpoint import load_checkpoint, load_trainer_state
from lifelong.train.config import RunConfig, load_config
from lifelong.train.lm import train

from .test_train import REPO, tiny_run

BAD_VALUES = [
    ("train", "steps", '"six"', "train.steps must be a whole number, got 'six'"),
    ("model", "dim", '"32"', "model.dim must be a whole number, got '32'"),
    ("train", "lr", '"fast"', "train.lr must be a finite number, got 'fast'"),
    ("model", "n_heads", "0", "model.n_heads must be >= 1"),
    ("train", "device", '"tpu"', "train.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("model", "n_layers", "true", "model.n_layers must be a whole number, got True"),
    ("model", "memory_options", "5", "model.memory_options must be a table"),
    ("train", "batch_size", "4.5", "train.batch_size must be a whole number, got 4.5"),
    ("model", "memory_options", "{ chunk_size = 2.5 }", "model.memory_options.chunk_size must be a whole number"),
    ("model", "memory_options", "{ max_lr = nan }", "model.memory_options.max_lr must be a finite number"),
    ("model", "memory_options", "{ chunk = 4 }", "model.memory_options: unknown keys ['chunk']"),
    ("train", "warmup_steps", "-1", "train.warmup_steps must be >= 0"),
    ("task", "options", "[1, 2]", "task.options must be a table"),
]


@pytest.mark.parametrize("table,key,value,message", BAD_VALUES)
def test_config_values_of_the_wrong_type_name_their_table_and_key(tmp_path, table, key, value, message):
    path = tmp_path / "run.toml"
    path.write_text(f'name = "bad"\n[model]\nkind = "mac"\n[{table}]\n{key} = {value}\n'
                    if table != "model" else f'name = "bad"\n[model]\nkind = "mac"\n{key} = {value}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.message == f"run.toml: {message}" or err.value.message.startswith(f"run.toml: {message}")


def test_yaml_and_the_dataclass_api_check_the_same_way(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  dim: '32'\n")
    with pytest.raises(ConfigError, match="run.yaml: model.dim must be a whole number"):
        load_config(path)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold tables"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")
    with pytest.raises(ConfigError, match="model.dim must be a whole number"):
        ModelConfig(kind="mac", dim="32")
    with pytest.raises(ConfigError, match="name must be a string"):
        RunConfig.from_dict({"name": 5})
    # what is right still works, ints where floats are asked for included
    assert ModelConfig(kind="mac", rope_base=10000).rope_base == 10000
    # every training config loads (configs/learn holds the writer trainer's configs,
    # checked by its own loader in tests/train/test_writer.py)
    training = [p for p in (REPO / "configs").rglob("*.toml")
                if p.relative_to(REPO / "configs").parts[0] != "learn"]
    assert len(training) > 20
    for toml in sorted(training):
        load_config(toml)


def test_neural_memory_config_checks_types_on_construction():
    for kw, msg in ((dict(dim="64"), "dim must be a whole number, got '64'"),
                    (dict(chunk_size=2.5), "chunk_size must be a whole number, got 2.5"),
                    (dict(max_lr=float("nan")), "max_lr must be a finite number"),
                    (dict(momentum="yes"), "momentum must be true or false")):
        with pytest.raises(ConfigError, match=msg):
            NeuralMemoryConfig(**kw)


def test_a_state_holding_nan_is_refused_on_load(tmp_path):
    from lifelong.neural.memory import native

    cfg = NeuralMemoryConfig(dim=8, heads=2, head_dim=4, chunk_size=2)
    with native.use(False):  # the eager loop: no compiler needed for this test
        _, state = NeuralMemory(cfg, seed=0)(torch.randn(1, 5, 8))
    state.save(tmp_path / "ok.safetensors")
    MemoryState.load(tmp_path / "ok.safetensors", expect_fingerprint=cfg.fingerprint())
    state.weights[0][0, 0, 0, 0] = float("nan")
    state.save(tmp_path / "nan.safetensors")
    with pytest.raises(StateError, match="tensor weights.0 holds NaN or infinite values"):
        MemoryState.load(tmp_path / "nan.safetensors")


# -- checkpoints ------------------------------------------------------------------------------


class _RunsCode:
    """A pickle payload that would run a command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A tiny run stopped at step 4 with checkpoints at steps 2 and 4, and the
    same run never stopped (for bit-for-bit comparison)."""
    root = tmp_path_factory.mktemp("runs")
    whole = train(tiny_run(root / "whole", kind="swa"))
    train(tiny_run(root / "split", kind="swa", checkpoint_every=2), until_step=4)
    return root, whole


def _copy(stopped_run, tmp_path) -> tuple[Path, object]:
    root, whole = stopped_run
    run = tmp_path / "run"
    shutil.copytree(root / "split", run)
    return run, whole


def _resume(run: Path):
    return train(tiny_run(run, kind="swa", checkpoint_every=2), resume=True)


def test_checkpoints_hold_no_pickle_and_resume_exactly(stopped_run, tmp_path):
    run, whole = _copy(stopped_run, tmp_path)
    step4 = run / "checkpoints" / "step_0000004"
    assert sorted(p.name for p in step4.iterdir()) == ["meta.json", "model.safetensors", "trainer.json",
                                                       "trainer.safetensors"]
    second = _resume(run)
    assert second.losses == whole.losses[4:]  # bit for bit


def test_a_crafted_trainer_pickle_runs_no_code(stopped_run, tmp_path):
    run, _ = _copy(stopped_run, tmp_path)
    marker = tmp_path / "owned"
    for ckpt in (run / "checkpoints").iterdir():  # every checkpoint in the old format, booby-trapped
        (ckpt / "trainer.json").unlink()
        (ckpt / "trainer.safetensors").unlink()
        (ckpt / "trainer.pt").write_bytes(pickle.dumps({"optimizer": _RunsCode(marker)}, protocol=2))
    with pytest.raises(StateError, match="no intact checkpoint") as err:
        _resume(run)
    assert "cannot be read safely" in err.value.message
    assert not marker.exists()


def test_an_old_format_checkpoint_is_read_safely_and_resumes_exactly(stopped_run, tmp_path):
    run, whole = _copy(stopped_run, tmp_path)
    step4 = run / "checkpoints" / "step_0000004"
    state = load_trainer_state(step4)
    torch.save(state, step4 / "trainer.pt")  # what older releases wrote
    (step4 / "trainer.json").unlink()
    (step4 / "trainer.safetensors").unlink()
    assert _resume(run).losses == whole.losses[4:]


@pytest.mark.parametrize("damage", ["truncate trainer", "flip meta", "drop model", "garble json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(stopped_run, tmp_path, damage):
    run, whole = _copy(stopped_run, tmp_path)
    step4 = run / "checkpoints" / "step_0000004"
    if damage == "truncate trainer":
        data = (step4 / "trainer.safetensors").read_bytes()
        (step4 / "trainer.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "flip meta":
        (step4 / "meta.json").write_text((step4 / "meta.json").read_text()[:-10])
    elif damage == "drop model":
        (step4 / "model.safetensors").unlink()
    else:
        (step4 / "trainer.json").write_text('{"format": "lifelong.train.trainer/1", "state": {"x": 1}}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = _resume(run)
    said = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(said) == 1 and "step_0000004" in said[0] and "using step_0000002" in said[0]
    assert second.losses == whole.losses[2:]  # resumed from step 2, exactly
    # the run wrote step 4 again, intact: the model loads from the run dir without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, meta = load_checkpoint(run)
    assert meta["step"] == 8


def test_loading_a_model_skips_a_damaged_checkpoint(stopped_run, tmp_path):
    run, _ = _copy(stopped_run, tmp_path)
    step4 = run / "checkpoints" / "step_0000004"
    (step4 / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.warns(CheckpointWarning, match="using step_0000002"):
        _, meta = load_checkpoint(run)
    assert meta["step"] == 2
    with pytest.raises(StateError, match="cannot be read"):
        load_checkpoint(step4)
