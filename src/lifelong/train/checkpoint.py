"""Checkpoints of a training run: save, load, find the latest (used by resume).

A checkpoint directory ``OUT/checkpoints/step_N/`` holds ``model.safetensors``
(weights), ``trainer.pt`` (optimiser, scheduler, RNG states) and ``meta.json``
(config, task, tokenizer, step), written in that order; ``meta.json`` present
means the checkpoint is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from lifelong.atomic import atomic_open, atomic_write_text
from lifelong.errors import ConfigError, NotFoundError
from lifelong.neural.config import ModelConfig
from lifelong.neural.lm import CausalLM
from lifelong.neural.pretrained import is_pretrained, read_pretrained_config
from lifelong.train.config import RunConfig

CHECKPOINT_FORMAT = "lifelong.neural.checkpoint/1"


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under a run directory, or None."""
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())
    return done[-1] if done else None


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
    with atomic_open(path / "trainer.pt", "wb") as fh:
        torch.save(trainer_state, fh)
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


def pretrained_meta(meta_task: dict[str, Any], step: int) -> dict[str, Any]:
    """What a saved model keeps beside its config so it can be evaluated alone."""
    return {"task": meta_task, "tokenizer": meta_task.get("tokenizer"), "step": step}


def _resolve_checkpoint(path: str | Path) -> Path:
    p = Path(path)
    if (p / "meta.json").is_file() or is_pretrained(p):
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise NotFoundError(
            f"no checkpoint at {p}",
            hint="pass a run directory (train.out_dir), one of its checkpoints/step_N folders, "
            "or a folder written by save_pretrained",
        )
    return latest


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[CausalLM, dict[str, Any]]:
    """Model (eval mode) and meta from a checkpoint dir, a run dir (its newest
    checkpoint) or a folder written by ``save_pretrained`` (``OUT/model``).

    ``meta`` holds ``model`` (the config), ``task`` (name, options, vocab_size),
    ``tokenizer`` (spec string or None), ``step`` and, for a checkpoint, ``run``
    (the whole run config).
    """
    from safetensors.torch import load_model

    p = _resolve_checkpoint(path)
    if not (p / "meta.json").is_file():  # a save_pretrained folder
        model = CausalLM.from_pretrained(p, device=str(device))
        _config, saved = read_pretrained_config(p, "CausalLM")
        meta = {"model": dataclasses.asdict(model.config), "task": saved.get("task") or {},
                "tokenizer": saved.get("tokenizer"), "step": saved.get("step"), "path": str(p)}
        return model, meta
    meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{p} is not a lifelong model checkpoint", hint="pass a training run's checkpoint"
        )
    model = CausalLM(ModelConfig(**meta["model"]))
    load_model(model, str(p / "model.safetensors"), device=str(device))
    meta["path"] = str(p)
    return model.to(device).eval(), meta


def restore_trainer(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_gen: torch.Generator,
    device: torch.device,
) -> int:
    """Load a checkpoint's weights and trainer state into a run being resumed;
    returns the step it was taken at."""
    from safetensors.torch import load_model

    saved = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))["model"]
    if saved != dataclasses.asdict(model.config):
        raise ConfigError(
            f"the checkpoint in {ckpt} is of another model than the config describes",
            hint="resume with the config the run was started with",
        )
    load_model(model, str(ckpt / "model.safetensors"), device=str(device))
    # RNG states must stay on the CPU; the optimizer moves its own state to the params.
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data_gen.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])
