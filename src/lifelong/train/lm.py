"""One training loop for every model and task: ``lifelong train CONFIG``.

The loop, top to bottom:

1. seed everything from ``train.seed``; build the task, then the model (its
   vocabulary is the task's);
2. AdamW (weight decay on matrices only), linear warmup then cosine decay to
   ``lr * min_lr_ratio``, gradient clipping, bf16 autocast on CUDA only;
3. each step draws a fresh batch from the task with a ``torch.Generator`` whose
   state is checkpointed, so a resumed run sees exactly the batches the
   uninterrupted run would have seen;
4. metrics go to ``OUT/metrics.jsonl``, checkpoints to ``OUT/checkpoints/step_N/``
   (``checkpoint.py``); progress goes to an ``on_step`` callback (the CLI draws
   the bar and the loss curve).

Distributed data parallel: launched by ``torchrun``, each rank draws the same
global batch and trains on its slice; the loss is normalised by the number of
scored tokens in the *global* batch, so DDP's gradient averaging gives the
gradient a single process would compute on the whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.atomic import atomic_write_text
from lifelong.data.registry import build_task as build_named_task
from lifelong.errors import ConfigError, NotFoundError
from lifelong.neural.lm import CausalLM, build_model
from lifelong.train.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    resume_latest,
    save_checkpoint,
)
from lifelong.train.config import RunConfig

# on_step(step, total, loss): called after every optimiser step on the main process
StepCallback = Callable[[int, int, float], None]


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


def build_task(cfg: RunConfig) -> Any:
    """The config's task; a suite name (e.g. ``s_niah``) or "a,b" mixes its tasks."""
    return build_named_task(cfg.task.name, cfg.task.options)


def task_meta(task: Any, cfg: RunConfig) -> dict[str, Any]:
    tok = getattr(task, "tokenizer", None)
    return {
        "name": cfg.task.name,
        "options": cfg.task.options,
        "vocab_size": int(task.vocab_size),
        "tokenizer": getattr(tok, "spec", None) if tok is not None else None,
    }


# --------------------------------------------------------------------------- the loop


def train(
    cfg: RunConfig,
    *,
    task: Any = None,
    until_step: int | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train per ``cfg``; stop after ``until_step`` (default ``cfg.train.steps``).

    ``task`` overrides the config's task (an object with ``vocab_size`` and
    ``sample_batch``). ``on_step(step, total, loss)`` is called after every
    step on the main process (progress display). ``resume`` continues from the newest checkpoint in
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
        if latest_checkpoint(out_dir) is None:
            raise NotFoundError(
                f"nothing to resume in {out_dir}", hint="start the run without resuming first"
            )
        step = resume_latest(out_dir, model, optimizer, scheduler, data_gen, device)

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
                "the checkpoints written so far are intact; resuming continues from the last",
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
        if on_step is not None and dist_.main:
            on_step(step, stop, losses[-1])
        if dist_.main and (
            step == stop or (t.checkpoint_every and step % t.checkpoint_every == 0)
        ):
            path = checkpoint_dir(out_dir, step)
            save_checkpoint(path, model, optimizer, scheduler, data_gen, step, cfg, meta_task)
    if dist_.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model=model, losses=losses, step=step, out_dir=out_dir)


def _truncate_metrics(path: Path, step: int) -> None:
    # A resumed run rewrites history after its checkpoint: drop records past it.
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = [line for line in keep if json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))
