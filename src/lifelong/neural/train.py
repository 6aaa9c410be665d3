"""One training loop for every model and task: ``lifelong train CONFIG``.

The loop, top to bottom:

1. seed everything from ``train.seed``; build the task, then the model (its
   vocabulary is the task's);
2. AdamW (weight decay on matrices only), linear warmup then cosine decay to
   ``lr * min_lr_ratio``, gradient clipping, bf16 autocast on CUDA only;
3. each step draws a fresh batch from the task with a ``torch.Generator`` whose
   state is checkpointed, so a resumed run sees exactly the batches the
   uninterrupted run would have seen;
4. metrics go to ``OUT/metrics.jsonl`` (and the loss curve to ``OUT/loss.png``),
   checkpoints to ``OUT/checkpoints/step_N/``.

Distributed data parallel: launched by ``torchrun``, each rank draws the same
global batch and trains on its slice; the loss is normalised by the number of
scored tokens in the *global* batch, so DDP's gradient averaging gives the
gradient a single process would compute on the whole batch.

A checkpoint directory holds ``model.safetensors`` (weights), ``trainer.pt``
(optimiser, scheduler, RNG states) and ``meta.json`` (config, task, tokenizer,
step), written in that order; ``meta.json`` present means the checkpoint is complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from lifelong.errors import ConfigError, NotFoundError
from lifelong.neural.configs import ModelConfig, RunConfig
from lifelong.neural.lm import CausalLM, build_model

CHECKPOINT_FORMAT = "lifelong.neural.checkpoint/1"


@dataclass
class TrainResult:
    model: CausalLM
    losses: list[float]  # one per step run in this call (global-batch mean)
    step: int  # steps completed in total
    out_dir: Path


# --------------------------------------------------------------------------- schedule


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from 1 down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    # Decay matrices (projections, embeddings); not gains, biases, gate scalars.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    t = cfg.train
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
    )


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); else single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def pick_device(spec: str, d: Dist) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device is cuda but no GPU is visible", hint="use device = 'cpu'"
            )
        if d.world > 1:
            return torch.device("cuda", d.local_rank)
    return torch.device(spec)


# --------------------------------------------------------------------------- tasks


class MixedTask:
    """Several tasks with one vocabulary; each batch is split evenly between them."""

    def __init__(self, name: str, tasks: list[Any]) -> None:
        sizes = {int(t.vocab_size) for t in tasks}
        if len(sizes) != 1:
            raise ConfigError(
                f"tasks of {name!r} have different vocabularies {sorted(sizes)}",
                hint="mix only tasks that share a tokenizer",
            )
        self.name, self.tasks = name, tasks
        self.vocab_size = sizes.pop()
        self.tokenizer = getattr(tasks[0], "tokenizer", None)

    def sample_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.tasks)
        sizes = [batch_size // n + (i < batch_size % n) for i in range(n)]
        parts = [t.sample_batch(s, seq_len, generator) for t, s in zip(self.tasks, sizes)]
        parts = [p for p in parts if p[0].shape[0]]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def build_task(cfg: RunConfig) -> Any:
    """The config's task; a suite name (e.g. ``s_niah``) or "a,b" mixes its tasks."""
    from lifelong.bench.tasks import get_task, suite_tasks

    names = suite_tasks(cfg.task.name)
    if len(names) == 1:
        return get_task(names[0], **cfg.task.options)
    return MixedTask(cfg.task.name, [get_task(n, **cfg.task.options) for n in names])


def task_meta(task: Any, cfg: RunConfig) -> dict[str, Any]:
    tok = getattr(task, "tokenizer", None)
    return {
        "name": cfg.task.name,
        "options": cfg.task.options,
        "vocab_size": int(task.vocab_size),
        "tokenizer": getattr(tok, "spec", None) if tok is not None else None,
    }


# --------------------------------------------------------------------------- checkpoints


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


def _resolve_checkpoint(path: str | Path) -> Path:
    p = Path(path)
    if (p / "meta.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise NotFoundError(
            f"no checkpoint at {p}",
            hint="pass a run directory (train.out_dir) or one of its checkpoints/step_N folders",
        )
    return latest


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[CausalLM, dict[str, Any]]:
    """Model (eval mode) and meta from a checkpoint dir or a run dir (its newest checkpoint).

    ``meta`` holds ``model`` (the config), ``task`` (name, options, vocab_size),
    ``tokenizer`` (spec string or None), ``step`` and ``run`` (the whole run config).
    """
    from safetensors.torch import load_model

    p = _resolve_checkpoint(path)
    meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{p} is not a lifelong model checkpoint", hint="pass a training run's checkpoint"
        )
    model = CausalLM(ModelConfig(**meta["model"]))
    load_model(model, str(p / "model.safetensors"), device=str(device))
    meta["path"] = str(p)
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------- the loop


def train(
    cfg: RunConfig,
    *,
    task: Any = None,
    until_step: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train per ``cfg``; stop after ``until_step`` (default ``cfg.train.steps``).

    ``task`` overrides the config's task (an object with ``vocab_size`` and
    ``sample_batch``). ``resume`` continues from the newest checkpoint in
    ``train.out_dir``: the learning-rate schedule, data and RNG streams continue
    exactly, so stopping and resuming gives the run that never stopped.
    """
    t = cfg.train
    spec = t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist_ = init_distributed("cuda" if spec.startswith("cuda") else "cpu")
    device = pick_device(spec, dist_)
    if t.batch_size % dist_.world:
        raise ConfigError(
            f"batch_size {t.batch_size} does not split over {dist_.world} processes",
            hint="make train.batch_size a multiple of the number of processes",
        )
    out_dir = Path(t.out_dir)
    stop = min(until_step if until_step is not None else t.steps, t.steps)

    task = task if task is not None else build_task(cfg)
    torch.manual_seed(t.seed)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=int(task.vocab_size))
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.min_lr_ratio)
    )
    data_gen = torch.Generator().manual_seed(t.seed + 1)
    meta_task = task_meta(task, cfg)

    step = 0
    if not resume and latest_checkpoint(out_dir) is not None:
        # Never train over an earlier run: its checkpoints would mix with this one's.
        raise ConfigError(
            f"{out_dir} already holds checkpoints of a run",
            hint="pass --resume to continue it, or choose another out_dir (--out-dir)",
        )
    if resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            raise NotFoundError(
                f"nothing to resume in {out_dir}", hint="run without --resume first"
            )
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
        step = int(state["step"])

    ddp_model: torch.nn.Module = model
    if dist_.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=ids)

    metrics_path = out_dir / "metrics.jsonl"
    if dist_.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, step)
    per_rank = t.batch_size // dist_.world
    lo = dist_.rank * per_rank
    losses: list[float] = []
    bar = _progress(progress and dist_.main, stop, step, cfg.name)
    window_tokens, window_start = 0, time.perf_counter()
    ddp_model.train()
    while step < stop:
        inputs, labels = task.sample_batch(t.batch_size, t.seq_len, data_gen)
        inputs = inputs[lo : lo + per_rank].to(device)
        labels = labels[lo : lo + per_rank].to(device)
        n_scored = _all_reduce((labels != -100).sum().to(torch.float64), dist_)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, _ = ddp_model(inputs)
        loss_sum = F.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
        )
        if not bool(torch.isfinite(loss_sum)):
            raise ConfigError(
                f"{cfg.name}: the training loss became non-finite at step {step + 1}",
                hint="lower train.lr (or model.memory_options max_lr for memory models); "
                "the checkpoints written so far are intact and `lifelong train` resumes from the last",
            )
        # DDP averages gradients over ranks; scale so the result is the global-batch mean.
        loss = loss_sum * dist_.world / n_scored.clamp(min=1).to(loss_sum.dtype)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        global_sum = _all_reduce(loss_sum.detach().to(torch.float64), dist_)
        global_loss = global_sum / n_scored.clamp(min=1)
        losses.append(float(global_loss))
        window_tokens += t.batch_size * t.seq_len
        if dist_.main and (step % t.log_every == 0 or step == stop):
            elapsed = time.perf_counter() - window_start
            record = {
                "step": step,
                "loss": losses[-1],
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": window_tokens / max(elapsed, 1e-9),
            }
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            window_tokens, window_start = 0, time.perf_counter()
        if bar is not None:
            bar.update(1, loss=losses[-1])
        if dist_.main and (
            step == stop or (t.checkpoint_every and step % t.checkpoint_every == 0)
        ):
            path = checkpoint_dir(out_dir, step)
            save_checkpoint(path, model, optimizer, scheduler, data_gen, step, cfg, meta_task)
    if bar is not None:
        bar.close()
    if dist_.main and metrics_path.exists():
        atomic_write_bytes(out_dir / "loss.png", plot_metrics(metrics_path, cfg.name))
    if dist_.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model=model, losses=losses, step=step, out_dir=out_dir)


def plot_metrics(path: Path, title: str) -> bytes:
    """The training loss curve from a metrics.jsonl, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (scored tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _truncate_metrics(path: Path, step: int) -> None:
    # A resumed run rewrites history after its checkpoint: drop records past it.
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = [line for line in keep if json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


class _Bar:
    """A rich progress bar showing the step and the latest loss."""

    def __init__(self, total: int, done: int, name: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task(name, total=total, completed=done, loss=float("nan"))

    def update(self, n: int, loss: float) -> None:
        self.progress.update(self.task, advance=n, loss=loss)

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int, done: int, name: str) -> _Bar | None:
    return _Bar(total, done, name) if enabled else None
