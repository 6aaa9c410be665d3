"""Notes → weights, measured: do readers with the consolidated adapter and no notes
do what readers with the notes in context do?

On worlds of the memory-learning protocol's ``onboarding`` suite (held-out world
seeds), the world's conventions are written as notes, in ``rounds`` batches.
After each round the notes of that round are consolidated into the namespace's
adapter (``lifelong.train.distill``; the consolidated notes are then retired),
and fresh readers — one attempt, no reflection, no documentation, the
protocol's reader settings — answer tasks under four conditions:

- ``notes``: the base model with every note so far in its context;
- ``adapter``: the consolidated adapter (the current version), no notes;
- ``raw``: the baseline adapter fine-tuned on the raw note text, no notes;
- ``none``: the base model, no notes.

Scores: *similar* — tasks on every convention consolidated so far; *round 1* —
tasks on the first round's conventions only (their retention after later
rounds); *dissimilar* — the protocol's dissimilar pool. Costs: context tokens
per reader (the largest prompt it sent) and note tokens in its context, the
round's data and training seconds, the adapter's bytes. Reader tasks carry no
handbook page, so memory is the only source of a convention; the recorded task
prompts the consolidation may use (``recorded_per_fact`` per convention, what
the sessions that wrote the notes worked on) are drawn from another random
stream than the readers' tasks.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_text
from lifelong.context.notes import Notes
from lifelong.context.session import Session, SessionConfig
from lifelong.context.store import open_store
from lifelong.learn.dissimilar import DissimilarPool
from lifelong.learn.onboarding import OnboardingFamily
from lifelong.llm.adapters import AdapterStore
from lifelong.task import Task
from lifelong.train.distill import DistillConfig, consolidate_into_weights

CONDITIONS = ("notes", "adapter", "raw", "none")


@dataclass
class ConsolidationBenchConfig:
    seeds: tuple[int, ...] = (100,)  # onboarding world seeds; the protocol's own runs use 0
    rounds: int = 3
    readers_per_fact: int = 3
    dissimilar: int = 20
    recorded_per_fact: int = 1
    max_tokens: int = 16  # per reader answer (the protocol's benchmark setting)
    raw_baseline: bool = True
    model: str = "hf:local"
    distill: DistillConfig = field(default_factory=DistillConfig)
    # the raw-text baseline trains as many epochs as it takes to match the distillation's steps
    raw: DistillConfig = field(default_factory=lambda: DistillConfig(objective="raw", batch_size=1))


def split_rounds(items: list[Any], rounds: int) -> list[list[Any]]:
    """``items`` in ``rounds`` consecutive batches, the first ones larger by at most one."""
    size, extra = divmod(len(items), rounds)
    out, start = [], 0
    for r in range(rounds):
        n = size + (1 if r < extra else 0)
        out.append(items[start:start + n])
        start += n
    return out


def fact_task(family: OnboardingFamily, key: str, rng: random.Random) -> Task:
    """A task of ``family`` on convention ``key``, without its handbook page."""
    while True:
        task = family.sample(rng)
        if task.metadata["fact"] == key:
            return dataclasses.replace(task, environment={}, max_attempts=1, feedback=None)


def run_world(seed: int, cfg: ConsolidationBenchConfig, hf: Any, out: Path,
              open_reader: Callable[[str], Any], log: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """All rounds of one world; returns (and logs) one record per round and condition."""
    family = OnboardingFamily(world_seed=seed)
    facts = list(family.conventions)
    random.Random(f"consolidation-order:{seed}").shuffle(facts)
    batches = split_rounds(facts, cfg.rounds)
    readers = {f.key: [fact_task(family, f.key, random.Random(f"reader:{seed}:{f.key}:{i}"))
                       for i in range(cfg.readers_per_fact)] for f in facts}
    recorded = {f.key: [fact_task(family, f.key, random.Random(f"writer:{seed}:{f.key}:{i}")).prompt
                        for i in range(cfg.recorded_per_fact)] for f in facts}
    pool = DissimilarPool()
    dissimilar = [pool.sample(random.Random(f"dissimilar:{seed}:{i}")) for i in range(cfg.dissimilar)]

    world = out / f"world-{seed}"
    store = open_store(f"sqlite:///{world / 'store.db'}")
    budget = 100_000
    ns = {"adapter": "distill", "raw": "raw", "reference": "reference"}
    notes = {k: Notes(store, v, budget, hf.count_tokens, model="bench", create=True) for k, v in ns.items()}
    stores = {"adapter": AdapterStore("distill", world / "adapters"), "raw": AdapterStore("raw", world / "adapters")}
    records: list[dict[str, Any]] = []
    base_cache: dict[str, tuple[float, int]] = {}  # the base model without notes never changes
    try:
        for r, batch in enumerate(batches, start=1):
            for f in batch:
                for n in notes.values():
                    n.add(f.statement)
            so_far = [f for b in batches[:r] for f in b]
            similar = [t for f in so_far for t in readers[f.key]]
            first = [t for f in batches[0] for t in readers[f.key]]
            last = r == len(batches)
            prompts = [p for f in so_far for p in recorded[f.key]]
            train: dict[str, dict[str, Any]] = {}
            for cond in ("adapter", "raw") if cfg.raw_baseline else ("adapter",):
                dcfg = cfg.distill
                if cond == "raw":  # the same number of optimizer steps as the distillation's round
                    steps = train["adapter"]["steps"]
                    dcfg = dataclasses.replace(cfg.raw, epochs=steps, max_steps=steps)
                res = consolidate_into_weights(hf, notes[cond], store=stores[cond], config=dcfg,
                                               recorded=prompts if cond == "adapter" else (), retire=True)
                train[cond] = {"version": res.version, "examples": res.examples, "replayed": res.replayed,
                               "sources": res.sources, "steps": res.steps, "data_s": round(res.data_seconds, 1),
                               "train_s": round(res.train_seconds, 1), "adapter_bytes": res.adapter_bytes,
                               "loss_first": res.loss_first, "loss_last": res.loss_last}
            for cond in CONDITIONS:
                if cond == "raw" and not cfg.raw_baseline:
                    continue
                if cond == "none":
                    todo = [t for t in similar + dissimilar if t.id not in base_cache]
                    scored = _read(hf, None, todo)
                    base_cache.update({t.id: (s, c) for t, s, c in zip(todo, scored["scores"],
                                                                         scored["context_tokens"], strict=True)})
                    tasks = similar + dissimilar
                    scored = {"scores": [base_cache[t.id][0] for t in tasks],
                              "context_tokens": [base_cache[t.id][1] for t in tasks], "note_tokens": [0] * len(tasks)}
                elif cond == "notes":  # dissimilar with notes: once, after the last round
                    tasks = similar + (dissimilar if last else [])
                    scored = _read(hf, notes["reference"], tasks)
                else:
                    tasks = similar + dissimilar
                    reader = open_reader(str(stores[cond].current().path))
                    try:
                        scored = _read(reader, None, tasks)
                    finally:
                        reader.close()
                by_id = dict(zip([t.id for t in tasks], scored["scores"], strict=True))
                rec = _summary(cond, similar, first, [t for t in dissimilar if t.id in by_id], by_id, scored)
                rec.update(train.get(cond, {}))
                rec.update({"world": seed, "round": r, "facts": len(so_far)})
                records.append(rec)
                log(rec)
    finally:
        store.close()
    return records


def _read(llm: Any, notes: Notes | None, tasks: list[Task]) -> dict[str, Any]:
    """Readers as the protocol runs them: one attempt, no reflection, no documentation."""
    scores, context, note_tokens = [], [], []
    block = notes.render() if notes is not None else ""
    for i, task in enumerate(tasks):
        cfg = SessionConfig(reflect=False, use_docs=False, max_tokens=16, temperature=0.0, seed=i)
        out = Session(llm, notes=notes, docs=None, config=cfg).run(task)
        scores.append(float(out.score or 0.0))
        context.append(out.context_tokens)
        note_tokens.append(llm.count_tokens(block) if block else 0)
    return {"scores": scores, "context_tokens": context, "note_tokens": note_tokens}


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _summary(cond: str, similar: list[Task], first: list[Task], dissimilar: list[Task],
             by_id: dict[str, float], scored: dict[str, Any]) -> dict[str, Any]:
    return {
        "condition": cond,
        "similar": _mean([by_id[t.id] for t in similar]),
        "round1": _mean([by_id[t.id] for t in first]),
        "dissimilar": _mean([by_id[t.id] for t in dissimilar]) if dissimilar else None,
        "n_similar": len(similar), "n_round1": len(first), "n_dissimilar": len(dissimilar),
        "context_tokens": _mean([float(x) for x in scored["context_tokens"]]),
        "note_tokens": _mean([float(x) for x in scored["note_tokens"]]),
    }


def run(cfg: ConsolidationBenchConfig, out: str | Path, *, log: Callable[[dict[str, Any]], None] | None = None,
        ) -> list[dict[str, Any]]:
    """Every world of ``cfg``; the records also go to ``out/records.jsonl``."""
    from lifelong.llm import load_llm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def write(rec: dict[str, Any]) -> None:
        lines.append(json.dumps(rec, sort_keys=True))
        atomic_write_text(out / "records.jsonl", "\n".join(lines) + "\n")
        if log:
            log(rec)

    hf = load_llm(cfg.model)
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        for seed in cfg.seeds:
            records += run_world(seed, cfg, hf, out, lambda path: load_llm(f"{cfg.model}?adapter={path}"), write)
    finally:
        hf.close()
    write({"condition": "total", "seconds": round(time.perf_counter() - t0, 1)})
    return records
