"""Checkpoints of a training run: save, load, find the latest (used by resume).

A checkpoint directory ``OUT/checkpoints/step_N/`` holds ``model.safetensors``
(weights), ``trainer.safetensors`` + ``trainer.json`` (optimiser, scheduler and
RNG states: their tensors, and the rest as JSON) and ``meta.json`` (config,
task, tokenizer, step), written in that order; ``meta.json`` present means the
checkpoint is complete.

Nothing in a checkpoint can run code: safetensors holds only tensors, JSON only
data. (A pickle, as ``torch.save`` writes, can run any command when loaded; the
``trainer.pt`` of older checkpoints is read with PyTorch's restricted
``weights_only`` unpickler, which refuses anything but tensors and plain data.)
Resuming falls back from a damaged newest checkpoint to the newest intact one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from lifelong.atomic import atomic_write_bytes, atomic_write_text
from lifelong.errors import CheckpointWarning, ConfigError, NotFoundError, StateError
from lifelong.neural.config import ModelConfig
from lifelong.neural.lm import CausalLM
from lifelong.train.config import RunConfig

CHECKPOINT_FORMAT = "lifelong.neural.checkpoint/1"
TRAINER_FORMAT = "lifelong.train.trainer/1"


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:07d}"


def complete_checkpoints(out_dir: str | Path) -> list[Path]:
    """The complete checkpoints under a run directory, oldest first."""
    root = Path(out_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under a run directory, or None."""
    done = complete_checkpoints(out_dir)
    return done[-1] if done else None


# -- trainer state: tensors in safetensors, everything else in JSON ---------------------------


def encode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON data, its tensors moved into ``tensors``. Every JSON object
    written is a tagged node (``tensor``, ``tuple`` or ``dict``), so plain data
    can never be mistaken for one."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(obj, tuple):
        return {"tuple": [encode_state(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        return {"dict": [[encode_state(k, tensors), encode_state(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def decode_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`; anything else in the file is refused."""
    if isinstance(data, list):
        return [decode_state(v, tensors) for v in data]
    if isinstance(data, dict):
        if len(data) != 1:
            raise ValueError(f"unexpected object with keys {sorted(data)[:4]}")
        (tag, value), = data.items()
        if tag == "tensor":
            return tensors[value]
        if tag == "tuple" and isinstance(value, list):
            return tuple(decode_state(v, tensors) for v in value)
        if tag == "dict" and isinstance(value, list):
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in value}
        raise ValueError(f"unexpected tag {tag!r}")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise ValueError(f"unexpected {type(data).__name__}")


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    tree = encode_state(state, tensors)
    atomic_write_bytes(path / "trainer.safetensors", save(tensors, metadata={"format": TRAINER_FORMAT}))
    atomic_write_text(path / "trainer.json", json.dumps({"format": TRAINER_FORMAT, "state": tree}))


def load_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer state; ``ValueError``/``OSError`` if it is damaged."""
    from safetensors.torch import load

    if (path / "trainer.json").is_file():
        doc = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != TRAINER_FORMAT:
            raise ValueError(f"trainer.json is not in format {TRAINER_FORMAT}")
        tensors = load((path / "trainer.safetensors").read_bytes())
        state = decode_state(doc["state"], tensors)
    elif (path / "trainer.pt").is_file():
        # An older checkpoint: a pickle. PyTorch's weights_only unpickler builds
        # only tensors and plain containers; a pickle that would run code is refused.
        try:
            state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"trainer.pt cannot be read safely ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    else:
        raise ValueError("no trainer state (trainer.json or trainer.pt)")
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "data_rng", "torch_rng",
                                           "step"} <= set(state):
        raise ValueError("the trainer state is incomplete")
    return state


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_gen: torch.Generator,
    step: int,
    cfg: RunConfig,
    meta_task: dict[str, Any],
) -> None:
    from safetensors.torch import save_model

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".model.safetensors.tmp"
    save_model(model, str(tmp))  # handles the tied embedding/head weights
    os.replace(tmp, path / "model.safetensors")
    trainer_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data_rng": data_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step": step,
    }
    save_trainer_state(path, trainer_state)
    (path / "trainer.pt").unlink(missing_ok=True)  # an older format's file, now superseded
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "model": dataclasses.asdict(model.config),
        "task": meta_task,
        "tokenizer": meta_task.get("tokenizer"),
        "run": cfg.to_dict(),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    atomic_write_text(path / "meta.json", json.dumps(meta, indent=2, sort_keys=True))


def _read_meta(p: Path) -> dict[str, Any]:
    """A checkpoint's meta.json; ValueError if it is not one (damaged, foreign)."""
    meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("meta.json is not a lifelong model checkpoint's")
    if not isinstance(meta.get("model"), dict):
        raise ValueError("meta.json has no model config")
    return meta


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _newest_intact(out_dir: Path, attempt: Any) -> Any:
    """``attempt(checkpoint)`` on the newest complete checkpoint whose files are
    intact, going back one at a time past damaged ones (each skipped one is
    warned about). A ConfigError -- the checkpoint is fine but does not fit --
    is not damage, and is raised."""
    candidates = complete_checkpoints(out_dir)
    if not candidates:
        raise NotFoundError(
            f"no checkpoint at {out_dir}",
            hint="pass a run directory (train.out_dir) or one of its checkpoints/step_N folders",
        )
    skipped: list[str] = []
    for ckpt in reversed(candidates):
        try:
            result = attempt(ckpt)
        except ConfigError:
            raise
        except Exception as exc:  # any reader's error on a damaged file: try the one before
            skipped.append(f"{ckpt.name} ({_reason(exc)})")
            continue
        if skipped:
            warnings.warn(CheckpointWarning(
                f"skipped damaged checkpoint(s) in {out_dir}: {'; '.join(skipped)}; using {ckpt.name}"),
                stacklevel=3)
        return result
    raise StateError(f"no intact checkpoint in {out_dir}: {'; '.join(skipped)}",
                     hint="restore the folder from a backup, or start the run again in a new out_dir")


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[CausalLM, dict[str, Any]]:
    """Model (eval mode) and meta from a checkpoint dir, or from a run dir (its
    newest intact checkpoint).

    ``meta`` holds ``model`` (the config), ``task`` (name, options, vocab_size),
    ``tokenizer`` (spec string or None), ``step`` and ``run`` (the whole run config).
    """
    from safetensors.torch import load_model

    def attempt(p: Path) -> tuple[CausalLM, dict[str, Any]]:
        meta = _read_meta(p)
        try:
            model = CausalLM(ModelConfig(**meta["model"]))
        except (ConfigError, TypeError) as exc:  # a config this code cannot build: damaged
            raise ValueError(f"meta.json: {exc}") from exc
        load_model(model, str(p / "model.safetensors"), device=str(device))
        meta["path"] = str(p)
        return model.to(device).eval(), meta

    p = Path(path)
    if (p / "meta.json").is_file():  # one checkpoint, named: no other will do
        try:
            return attempt(p)
        except Exception as exc:
            raise StateError(f"checkpoint {p} cannot be read: {_reason(exc)}",
                             hint="pass the run directory to use its newest intact checkpoint") from exc
    return _newest_intact(p, attempt)


def restore_trainer(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_gen: torch.Generator,
    device: torch.device,
) -> int:
    """Load a checkpoint's weights and trainer state into a run being resumed;
    returns the step it was taken at. Every file is read (and checked) before
    anything is changed."""
    from safetensors.torch import load_model

    saved = _read_meta(ckpt)["model"]
    if saved != dataclasses.asdict(model.config):
        raise ConfigError(
            f"the checkpoint in {ckpt} is of another model than the config describes",
            hint="resume with the config the run was started with",
        )
    # RNG states must stay on the CPU; the optimizer moves its own state to the params.
    state = load_trainer_state(ckpt)
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"trainer state has step {step!r}")
    load_model(model, str(ckpt / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data_gen.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return step


def resume_latest(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_gen: torch.Generator,
    device: torch.device,
) -> int:
    """:func:`restore_trainer` from the newest intact checkpoint of a run; returns its step."""
    return _newest_intact(out_dir, lambda ckpt: restore_trainer(ckpt, model, optimizer, scheduler,
                                                                data_gen, device))
