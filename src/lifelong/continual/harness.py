"""Run learners over a stream of tasks: the retention matrix, its metrics, and the cost.

After learning task ``i`` the learner answers the test of every task ``j <= i``
(``upper=True`` also ``j > i``, for forward transfer): ``R[i][j]``. The metrics
(``lifelong.continual.metrics``) and the cost sit side by side: seconds of
learning and answering, context tokens per query, tokens and bytes of memory
carried. ``run_benchmark`` repeats this over seeds and learners and reports the
spread; ``heatmap_png`` draws a learner's mean matrix.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_bytes, atomic_write_text
from lifelong.continual.learners import Learner
from lifelong.continual.metrics import mean_std, summary
from lifelong.data.base import ContinualTask


@dataclass
class StreamResult:
    stream: str
    learner: str
    seed: int
    metric: str
    tasks: list[str]
    R: list[list[float | None]]
    metrics: dict[str, float | None]
    cost: dict[str, float]
    alone: list[float] | None = None  # each task learnt by a fresh learner, on its own
    floor: list[float] = field(default_factory=list)  # each task's score of one constant answer
    outputs: dict[str, list[str]] = field(default_factory=dict)  # "i,j" -> outputs
    learner_log: list[Any] = field(default_factory=list)  # what the learner says it did (its ``log``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_stream(learner: Learner, tasks: Sequence[ContinualTask], *, stream: str = "", seed: int = 0,
               upper: bool = False, on_cell: Callable[[int, int, float], None] | None = None) -> StreamResult:
    """Learn the tasks in order; after each, test on the tasks seen so far."""
    T = len(tasks)
    if T == 0:
        raise ValueError("a stream needs at least one task")
    metrics = {t.metric for t in tasks}
    if len(metrics) != 1:
        raise ValueError(f"the tasks of one stream must share a metric, got {sorted(metrics)}")
    R: list[list[float | None]] = [[None] * T for _ in range(T)]
    outputs: dict[str, list[str]] = {}
    learn_s = answer_s = 0.0
    context_tokens: list[int] = []
    for i, task in enumerate(tasks):
        t0 = time.perf_counter()
        learner.learn(task)
        learn_s += time.perf_counter() - t0
        for j in range(T if upper else i + 1):
            test = tasks[j]
            answers = []
            for q in test.queries:
                t0 = time.perf_counter()
                a = learner.answer(q)
                answer_s += time.perf_counter() - t0
                answers.append(a.text)
                context_tokens.append(int(a.context_tokens))
            R[i][j] = float(test.score(answers, [q.reference for q in test.queries]))
            outputs[f"{i},{j}"] = answers
            if on_cell is not None:
                on_cell(i, j, R[i][j])
    mem = learner.memory()
    n = len(context_tokens)
    cost = {"learn_s": learn_s, "answer_s": answer_s, "queries": float(n),
            "answer_s_per_query": answer_s / n if n else 0.0,
            "context_tokens_per_query": math.fsum(context_tokens) / n if n else 0.0,
            "memory_tokens": float(mem.tokens), "state_bytes": float(mem.bytes)}
    return StreamResult(stream, learner.name, seed, tasks[0].metric, [t.name for t in tasks], R, summary(R),
                        cost, floor=[constant_floor(t) for t in tasks], outputs=outputs,
                        learner_log=list(getattr(learner, "log", []) or []))


def constant_floor(task: ContinualTask) -> float:
    """The score of answering every query with the material's first answer (the first
    parallel sentence; one label): what copying the format, learning nothing, gets."""
    if not task.practice or not task.queries:
        return 0.0
    refs = [q.reference for q in task.queries]
    return float(task.score([task.practice[0].reference] * len(refs), refs))


def run_alone(make: Callable[[], Learner], tasks: Sequence[ContinualTask],
              first: float | None = None) -> list[float]:
    """Each task learnt by a fresh learner on its own and tested on itself. ``first``:
    the first task's score if already known (a stream's ``R[0][0]`` is that score)."""
    scores = [] if first is None else [float(first)]
    for task in tasks[len(scores):]:
        learner = make()
        try:
            learner.learn(task)
            answers = [learner.answer(q).text for q in task.queries]
        finally:
            close = getattr(learner, "close", None)
            if close is not None:
                close()
        scores.append(float(task.score(answers, [q.reference for q in task.queries])))
    return scores


def aggregate(results: Sequence[StreamResult]) -> dict[str, Any]:
    """Mean and spread (sample std over seeds) of one learner's runs."""
    if not results:
        raise ValueError("nothing to aggregate")
    T = len(results[0].R)
    mean_R: list[list[float | None]] = []
    for i in range(T):
        row: list[float | None] = []
        for j in range(T):
            vals = [r.R[i][j] for r in results]
            row.append(mean_std(vals)[0] if all(v is not None for v in vals) else None)
        mean_R.append(row)
    out: dict[str, Any] = {"learner": results[0].learner, "stream": results[0].stream,
                           "metric": results[0].metric, "seeds": [r.seed for r in results], "R_mean": mean_R}
    for key in ("average", "bwt", "forgetting"):
        m, s = mean_std([r.metrics[key] for r in results])
        out[key] = {"mean": m, "std": s}
    if all(r.floor for r in results):
        m, s = mean_std([math.fsum(r.floor) / len(r.floor) for r in results])
        out["floor_average"] = {"mean": m, "std": s}
    if all(r.alone is not None for r in results):
        alone = [math.fsum(r.alone) / len(r.alone) for r in results if r.alone]
        m, s = mean_std(alone)
        out["alone_average"] = {"mean": m, "std": s}
    for key in results[0].cost:
        out[key] = mean_std([r.cost[key] for r in results])[0]
    return out


def heatmap_png(agg: dict[str, Any], title: str = "") -> bytes:
    """The learner's mean retention matrix as a heatmap (rows: after task i; columns: task j)."""
    from lifelong.plots import new_figure, png_bytes

    R = agg["R_mean"]
    T = len(R)
    hi = 100.0 if agg["metric"] == "chrF" else 1.0
    grid = [[float("nan") if v is None else v for v in row] for row in R]
    fig, ax = new_figure(figsize=(1.2 + 0.7 * T, 1.0 + 0.6 * T), dpi=110)
    im = ax.imshow(grid, vmin=0.0, vmax=hi, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if R[i][j] is not None:
                v = R[i][j]
                ax.text(j, i, f"{v:.0f}" if hi > 1 else f"{v:.2f}", ha="center", va="center",
                        color="white" if v < 0.6 * hi else "black", fontsize=8)
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("tested on task j")
    ax.set_ylabel("after learning task i")
    ax.set_title(title or f"{agg['stream']}: {agg['learner']} ({agg['metric']})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return png_bytes(fig)


def write_results(out: Path, results: Sequence[StreamResult], aggregates: Sequence[dict[str, Any]]) -> None:
    """``records.jsonl`` (one run per line), ``summary.json``, and a heatmap per learner."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in results))
    atomic_write_text(out / "summary.json", json.dumps(list(aggregates), indent=2) + "\n")
    for agg in aggregates:
        safe = re.sub(r"[^\w.-]+", "-", agg["learner"]).strip("-.") or "learner"
        atomic_write_bytes(out / f"{agg['stream']}-{safe}.png", heatmap_png(agg))


def run_benchmark(stream: str, seeds: Sequence[int], learners: Sequence[str | Callable[[int], Learner]],
                  llm: Any = None, *, options: dict[str, Any] | None = None, alone: bool = False,
                  upper: bool = False, log: Callable[[str], None] | None = None,
                  ) -> tuple[list[StreamResult], list[dict[str, Any]]]:
    """Every learner on the stream of every seed. A learner is a built-in name
    (``learners.BUILTIN``, run on ``llm``) or a factory ``seed -> Learner``."""
    from lifelong.continual.learners import make_learner
    from lifelong.data.registry import get_stream

    def factory(spec: str | Callable[[int], Learner], seed: int) -> Learner:
        return make_learner(spec, llm, seed=seed) if isinstance(spec, str) else spec(seed)

    results: list[StreamResult] = []
    by_learner: dict[str, list[StreamResult]] = {}
    for spec in learners:
        for seed in seeds:
            tasks = get_stream(stream, seed, **dict(options or {}))
            learner = factory(spec, seed)
            try:
                def cell(i: int, j: int, v: float, name: str = learner.name, s: int = seed) -> None:
                    if log is not None:
                        log(f"{stream} {name} seed {s}: R[{i}][{j}] = {v:.3f}")

                r = run_stream(learner, tasks, stream=stream, seed=seed, upper=upper, on_cell=cell)
            finally:
                close = getattr(learner, "close", None)
                if close is not None:
                    close()
            if alone:
                r.alone = run_alone(lambda spec=spec, seed=seed: factory(spec, seed), tasks, first=r.R[0][0])
            results.append(r)
            by_learner.setdefault(r.learner, []).append(r)
    return results, [aggregate(rs) for rs in by_learner.values()]
