"""Accuracy by length: run a causal LM over a task's evaluation examples, score, report.

The model is any ``torch.nn.Module`` whose ``forward(input_ids)`` returns logits
``[B, T, V]`` or a tuple ``(logits, state)``, as ``lifelong.neural.lm.CausalLM`` does.
Text tasks are answered by greedy decoding: ``model.generate(input_ids,
max_new_tokens=...)`` when the model has it, else a loop that feeds one token at a time
with the returned state (so memory models decode in constant memory). MQAR is
scored by one forward pass: the argmax at each query position against its value.

Results are a plain dict (written as JSON) plus a PNG plot of accuracy by length.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_bytes, atomic_write_text
from lifelong.data.base import IGNORE_INDEX, EvalExample, SequenceTask
from lifelong.data.registry import get_task
from lifelong.errors import ConfigError
from lifelong.plots import new_figure, png_bytes


def _logits(out: Any):
    return out[0] if isinstance(out, tuple) else out


def _forward_chunked(model: Any, ids: Any, chunk: int | None) -> tuple[Any, Any]:
    """Logits of the whole of ``ids`` and the state after it, reading ``chunk`` tokens a call.

    Chunked reading is streaming inference: a memory model then holds only its state
    and one chunk, whatever the length. Without ``chunk`` the sequence goes in whole.
    """
    import torch

    if not chunk or ids.shape[1] <= chunk:
        out = model(ids)
        return _logits(out), (out[1] if isinstance(out, tuple) and len(out) > 1 else None)
    state, parts = None, []
    for start in range(0, ids.shape[1], chunk):
        out = model(ids[:, start : start + chunk], state=state)
        if not (isinstance(out, tuple) and len(out) > 1):
            raise ConfigError(
                "this model returns no state, so it cannot read a prompt in chunks",
                hint="leave --chunk unset",
            )
        parts.append(out[0])
        state = out[1]
    return torch.cat(parts, dim=1), state


def greedy_generate(
    model: Any,
    input_ids: list[int],
    max_new_tokens: int,
    eos_id: int | None,
    device: str = "cpu",
    chunk: int | None = None,
) -> list[int]:
    """New token ids after ``input_ids`` (stopping at eos, which is not returned)."""
    import inspect

    import torch

    ids = torch.tensor([input_ids], dtype=torch.long, device=device)
    if hasattr(model, "generate"):
        kwargs = {}
        if chunk and "prefill_chunk" in inspect.signature(model.generate).parameters:
            kwargs["prefill_chunk"] = chunk
        out = model.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
        out = out[0] if out.dim() == 2 else out
        # generate() may return the prompt with the continuation, or the continuation only.
        if out.numel() >= ids.shape[1] and torch.equal(out[: ids.shape[1]], ids[0]):
            out = out[ids.shape[1] :]
        new = out.tolist()
    else:
        new = []
        logits, state = _forward_chunked(model, ids, chunk)
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if nxt == eos_id:
                break
            step = torch.tensor([[nxt]], dtype=torch.long, device=device)
            if state is not None:
                out = model(step, state=state)
                state = out[1]
            else:  # a stateless model re-reads everything
                ids = torch.cat([ids, step], dim=1)
                out = model(ids)
            logits = _logits(out)
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    return new[:max_new_tokens]


def score_example(
    model: Any, task: SequenceTask, ex: EvalExample, device: str = "cpu", chunk: int | None = None
) -> tuple[float, str]:
    """(score in [0, 1], what the model said) for one example."""
    import torch

    if ex.labels is not None:
        ids = torch.tensor([ex.input_ids], dtype=torch.long, device=device)
        labels = torch.tensor([ex.labels], dtype=torch.long, device=device)
        pred = _forward_chunked(model, ids, chunk)[0].argmax(-1)
        mask = labels != IGNORE_INDEX
        correct = (pred[mask] == labels[mask]).float()
        return float(correct.mean()) if correct.numel() else 0.0, ""
    tok = task.tokenizer
    new = greedy_generate(model, ex.input_ids, ex.max_new_tokens, tok.eos_id, device, chunk)
    text = tok.decode(new)
    return task.score(text, ex), text


def evaluate(
    model: Any,
    tasks: dict[str, SequenceTask],
    lengths: list[int],
    n: int,
    seed: int,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` on every task at every length: ``results[task][length]``.

    ``chunk`` reads each prompt ``chunk`` tokens at a time, carrying the model's state
    (streaming inference); None reads it whole.
    """
    import torch

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        with torch.inference_mode():
            for name, task in tasks.items():
                results[name] = {}
                for length in lengths:
                    t0 = time.perf_counter()
                    scores, outputs = [], []
                    try:
                        examples = task.eval_examples(n, length, seed)
                    except ConfigError as exc:
                        # A length the task cannot fill (0k NIAH, 128-token BABILong):
                        # reported as skipped, the other lengths still run.
                        results[name][str(length)] = {"accuracy": None, "skipped": exc.message}
                        continue
                    for ex in examples:
                        s, text = score_example(model, task, ex, device, chunk)
                        scores.append(s)
                        outputs.append(text)
                    seconds = time.perf_counter() - t0
                    prompt_tokens = sum(len(ex.input_ids) for ex in examples)
                    results[name][str(length)] = {
                        "accuracy": sum(scores) / len(scores) if scores else 0.0,
                        "n": len(scores),
                        "scores": scores,
                        "outputs": outputs[:5],
                        "seconds": round(seconds, 3),
                        # Prompt tokens read per second, generation included in the time.
                        "prompt_tokens_per_s": round(prompt_tokens / max(seconds, 1e-9), 1),
                    }
                    if progress:
                        progress(
                            f"{name} @ {format_length(length)}: "
                            f"{results[name][str(length)]['accuracy']:.3f}"
                        )
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return {
        "lengths": lengths,
        "n": n,
        "seed": seed,
        "chunk": chunk,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
        "results": results,
    }


def format_length(length: int) -> str:
    if length % 1024 == 0:  # 0 -> "0k", BABILong's name for the story alone
        return f"{length // 1024}k"
    return str(length)


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of accuracy by length (tasks down, lengths across, mean last)."""
    lengths = report["lengths"]
    header = ["task"] + [format_length(x) for x in lengths]
    rows = []

    def cell(acc: float | None) -> str:
        return "—" if acc is None else f"{acc:.3f}"

    for name, by_len in report["results"].items():
        rows.append([name] + [cell(by_len[str(x)]["accuracy"]) for x in lengths])
    if len(report["results"]) > 1:
        means = []
        for x in lengths:
            accs = [r[str(x)]["accuracy"] for r in report["results"].values()]
            accs = [a for a in accs if a is not None]
            means.append(cell(sum(accs) / len(accs) if accs else None))
        rows.append(["mean"] + means)
    return header, rows


def write_report(
    report: dict[str, Any], out_dir: str | Path, stem: str = "bench"
) -> tuple[Path, Path]:
    """Write ``{stem}.json`` and ``{stem}.png`` (accuracy by length) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write_bytes(png_path, plot_png(report))
    return json_path, png_path


def chance_level(task: SequenceTask) -> float | None:
    """The accuracy of guessing uniformly among the task's answers, where the task
    says what they are: MQAR's value tokens, BABILong's answer labels; else None."""
    value_range = getattr(task, "value_range", None)
    if value_range is not None:
        return 1.0 / max(1, value_range[1] - value_range[0])
    labels = getattr(task, "labels", None)
    if labels:
        return 1.0 / len(labels)
    return None


def plot_png(report: dict[str, Any]) -> bytes:
    fig, ax = new_figure(figsize=(7.6, 4.0), dpi=120)
    draw_accuracy(ax, report)
    return png_bytes(fig)


def draw_accuracy(ax: Any, report: dict[str, Any]) -> None:
    """Accuracy by length, one line per task with ±1 standard error bars (n examples per
    point), each task's chance level dashed in its colour; the legend beside the axes."""
    lengths = report["lengths"]
    xs = list(range(len(lengths)))
    chance = report.get("chance") or {}
    for i, (name, by_len) in enumerate(report["results"].items()):
        ys, errs = [], []
        for x in lengths:
            r = by_len[str(x)]
            acc = r.get("accuracy")
            ys.append(float("nan") if acc is None else acc)  # skipped lengths leave a gap
            scores = r.get("scores") or []
            errs.append(_stderr(scores) if acc is not None else 0.0)
        line = ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=name, zorder=3)
        level = chance.get(name)
        if level is not None:
            ax.axhline(level, linestyle="--", linewidth=1, color=line[0].get_color(), alpha=0.7,
                       label=f"{name}: chance {level:.3f}")
    ax.set_xticks(xs, [format_length(x) for x in lengths])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy (±1 s.e.)")
    title = report.get("title") or "accuracy by length"
    details = [f"n={report.get('n')} per point"]
    if report.get("step") is not None:
        details.append(f"checkpoint step {report['step']}")
    ax.set_title(f"{title}\n({', '.join(details)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _stderr(scores: list[float]) -> float:
    """Standard error of the mean of ``scores`` (0 for fewer than two)."""
    n = len(scores)
    if n < 2:
        return 0.0
    mean = sum(scores) / n
    return math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)


def tasks_for_model(
    names: tuple[str, ...] | list[str], meta: dict[str, Any], options: dict[str, Any] | None = None
) -> dict[str, SequenceTask]:
    """Build the named tasks to match a checkpoint's ``meta`` (its tokenizer, MQAR vocabulary).

    ``meta["task"]`` is the training task, a name or ``{"name": ..., "options": {...}}``;
    ``meta["tokenizer"]`` the tokenizer spec (or JSON) of a text model. ``options``
    override both.
    """
    trained = meta.get("task") or {}
    if isinstance(trained, str):
        trained = {"name": trained, "options": {}}
    trained_name = str(trained.get("name", "")).lower().replace("-", "_")
    trained_opts = dict(trained.get("options") or {})
    options = dict(options or {})
    out: dict[str, SequenceTask] = {}
    for name in names:
        opts: dict[str, Any] = {}
        if name == "mqar":
            if trained_name == "mqar":
                opts.update(trained_opts)
        else:
            if meta.get("tokenizer"):
                opts["tokenizer"] = meta["tokenizer"]
            elif trained_opts.get("tokenizer"):
                opts["tokenizer"] = trained_opts["tokenizer"]
            if name == trained_name:
                opts.update(trained_opts)
        opts.update(options)
        task = get_task(name, **opts)
        model_vocab = (meta.get("model") or {}).get("vocab_size")
        if model_vocab is not None and task.vocab_size > int(model_vocab):
            raise ConfigError(
                f"{name} needs a vocabulary of {task.vocab_size} tokens; "
                f"the model has {model_vocab}",
                hint="evaluate on the kind of task the model was trained on "
                "(text suites need a text model, mqar an mqar model)",
            )
        out[name] = task
    return out
