"""The memory-learning protocol: does what one instance writes help the next?

One episode:

1. a **writer** session runs a task with the current memory, then reflects
   (writes, edits, removes notes and docs — as the strategy allows);
2. **R readers** — fresh instances given those memories, not reflecting —
   each run a task drawn *same* / *similar* / *dissimilar* (default
   0.01 / 0.89 / 0.10): the writer's task again, another task of its family,
   or one from the dissimilar pool. Readers get one attempt and no retry:
   what they know at the start is what is measured.

reward = aggregate(reader scores) − λ·note_tokens − μ·context_tokens − ν·doc_tokens

with every term reported separately. ``note_tokens`` is the memory readers
inherit (the notes block, or the pasted transcript); ``context_tokens`` the
mean largest prompt a reader sent. Sequential mode runs K episodes on one
memory, so edits and removals count; the memory after each episode is kept
under ``memory/episode-NNNN``.

Everything random is keyed by (seed, episode, role, index), not drawn from a
running stream: all strategies see the same tasks, and a resumed run draws
exactly what the interrupted one would have. The JSONL log is rewritten
atomically after every session; on restart finished sessions are skipped and
the memory is restored from the last episode's snapshot.

With a deterministic backend the log is byte-for-byte repeatable apart from
``latency_s``. The embedded model is deterministic per prompt sequence: two
fresh processes give the same log; within one process, llama.cpp's prompt
cache changes batch shapes (and the last bits of the logits) once the same
prompts have been seen before — use ``local?cache_prompt=false`` to compare
runs made in one process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_text
from lifelong.context.notes import budget_for
from lifelong.errors import ConfigError, LifelongError
from lifelong.learn.strategies import MemoryFolder, Strategy
from lifelong.learn.suites import Suite
from lifelong.task import Task, TaskFamily

log = logging.getLogger(__name__)


@dataclass
class ProtocolConfig:
    episodes: int = 20
    readers: int = 4
    p_same: float = 0.01
    p_similar: float = 0.89
    p_dissimilar: float = 0.10
    note_penalty: float = 0.0005  # λ per note token
    context_penalty: float = 0.0001  # μ per context token
    doc_penalty: float = 0.0  # ν per documentation token (documentation is cheap: off by default)
    aggregate: str = "mean"  # "mean" | "median" | "min" of reader scores
    seed: int = 0
    max_tokens: int = 24  # per answer; a base model answers in a few tokens
    reflection_max_tokens: int = 32  # the writer's note (one line)
    doc_max_tokens: int = 64  # the writer's documentation entry
    temperature: float = 0.0
    # None: the same default as every command, the model's context window − task reserve
    note_budget_tokens: int | None = None
    reader_attempts: int = 1
    concurrency: int = 1  # readers of one episode at once (1 for the embedded model)

    def __post_init__(self) -> None:
        probs = (self.p_same, self.p_similar, self.p_dissimilar)
        if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ConfigError(
                f"same/similar/dissimilar probabilities {probs} must be >= 0 and sum to 1",
                hint="e.g. 0.01 / 0.89 / 0.10",
            )
        if self.episodes < 1 or self.readers < 1:
            raise ConfigError("episodes and readers must be at least 1")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"unknown aggregate {self.aggregate!r}", hint=f"use one of {sorted(AGGREGATES)}")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")


AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
}

# Settings that make two runs' sessions comparable; a resumed run must match them.
_RUN_KEYS = ("readers", "p_same", "p_similar", "p_dissimilar", "seed", "max_tokens", "temperature",
             "note_budget_tokens", "reader_attempts", "reflection_max_tokens", "doc_max_tokens")


# --- Sessions -----------------------------------------------------------------

SessionFactory = Callable[[Any, Any, Any, dict[str, Any]], Any]


def real_session(llm: Any, notes: Any, docs: Any, options: dict[str, Any]) -> Any:
    """The lifelong ``Session`` (what users run)."""
    from lifelong.context.session import Session, SessionConfig

    return Session(llm, notes=notes, docs=docs, config=SessionConfig(**options))


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts``, stable across processes and platforms."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") >> 1


# --- Sampling -----------------------------------------------------------------


def writer_task(suite: Suite, seed: int, episode: int) -> tuple[TaskFamily, Task]:
    rng = random.Random(f"{seed}:{episode}:writer")
    family = family_at(rng.choice(suite.families), episode)
    return family, family.sample(rng)


def family_at(family: TaskFamily, episode: int) -> TaskFamily:
    """The family as it stands in ``episode``: a world that changes mid-run
    (``DriftingOnboarding``) has an ``at(episode)``; others are the same throughout."""
    at = getattr(family, "at", None)
    return at(episode) if callable(at) else family


def reader_task(suite: Suite, config: ProtocolConfig, episode: int, index: int,
                family: TaskFamily, writer: Task) -> tuple[str, Task]:
    """(relation, task) of reader ``index`` of ``episode``."""
    rng = random.Random(f"{config.seed}:{episode}:reader:{index}")
    u = rng.random()
    if u < config.p_same:
        return "same", writer
    if u < config.p_same + config.p_similar:
        return "similar", family.sample(rng)
    return "dissimilar", suite.dissimilar.sample(rng)


# --- Records ------------------------------------------------------------------


def session_record(*, strategy: str, episode: int, role: str, index: int, relation: str | None,
                   task: Task, outcome: Any, note_tokens: int, doc_tokens: int,
                   error: str | None = None, latency_s: float = 0.0) -> dict[str, Any]:
    """One JSONL line per session. ``latency_s`` is the only wall-clock field."""
    out = outcome
    score = None if out is None else getattr(out, "score", None)
    return {
        "type": "session",
        "strategy": strategy,
        "episode": episode,
        "role": role,
        "index": index,
        "relation": relation,
        "task_id": task.id,
        "family": task.family,
        "score": score,
        "answer": None if out is None else getattr(out, "answer", None),
        "attempts": 0 if out is None else getattr(out, "attempts", 0),
        "prompt_tokens": 0 if out is None else getattr(out, "prompt_tokens", 0),
        "completion_tokens": 0 if out is None else getattr(out, "completion_tokens", 0),
        "context_tokens": 0 if out is None else getattr(out, "context_tokens", 0),
        "note_tokens": note_tokens,
        "doc_tokens": doc_tokens,
        "notes_written": [] if out is None else list(getattr(out, "notes_written", []) or []),
        "docs_written": [] if out is None else [str(p) for p in (getattr(out, "docs_written", []) or [])],
        "transcript": (list(getattr(out, "transcript", []) or []) if (out is not None and role == "writer")
                       else None),
        "error": error if error is not None else (None if out is None else getattr(out, "error", None)),
        "latency_s": round(latency_s, 3),
    }


def episode_record(strategy: str, episode: int, readers: list[dict], config: ProtocolConfig,
                   note_tokens: int, doc_tokens: int) -> dict[str, Any]:
    """The reward of one episode, every term separately."""
    # A failed session (checker raised, model refused) counts as 0: it did not do the task.
    scores = [r["score"] if r["score"] is not None else 0.0 for r in readers]
    by_rel = {rel: [s for s, r in zip(scores, readers, strict=True) if r["relation"] == rel]
              for rel in ("same", "similar", "dissimilar")}
    context = statistics.fmean([r["context_tokens"] for r in readers]) if readers else 0.0
    score = AGGREGATES[config.aggregate](scores)
    note_pen = config.note_penalty * note_tokens
    ctx_pen = config.context_penalty * context
    doc_pen = config.doc_penalty * doc_tokens
    return {
        "type": "episode",
        "strategy": strategy,
        "episode": episode,
        "reader_score": round(score, 6),
        "same": _mean_or_none(by_rel["same"]),
        "similar": _mean_or_none(by_rel["similar"]),
        "dissimilar": _mean_or_none(by_rel["dissimilar"]),
        "n_same": len(by_rel["same"]),
        "n_similar": len(by_rel["similar"]),
        "n_dissimilar": len(by_rel["dissimilar"]),
        "note_tokens": note_tokens,
        "doc_tokens": doc_tokens,
        "context_tokens": round(context, 3),
        "note_penalty": round(note_pen, 6),
        "context_penalty": round(ctx_pen, 6),
        "doc_penalty": round(doc_pen, 6),
        "reward": round(score - note_pen - ctx_pen - doc_pen, 6),
        "errors": sum(1 for r in readers if r["error"]),
    }


def _mean_or_none(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 6) if values else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise ConfigError(f"{path}:{lineno} is not valid JSON",
                                  hint="the run log is damaged; start again with a new --out folder") from None
    return records


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


# --- The protocol -------------------------------------------------------------


@dataclass
class RunResult:
    strategy: str
    folder: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "episode"]

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "session"]


class Protocol:
    """Runs the protocol for one strategy into ``out/<strategy>/``.

    ``session_factory(llm, notes, docs, options)`` builds a session with
    ``.run(task) -> Outcome``; the default is the real ``Session``. ``progress``
    is called after every session with (done, total).
    """

    def __init__(self, llm: Any, suite: Suite, strategy: Strategy, config: ProtocolConfig,
                 out: str | Path, *, session_factory: SessionFactory | None = None,
                 progress: Callable[[int, int], None] | None = None, writer_llm: Any | None = None) -> None:
        self.llm = llm
        # The writer may be another model than the readers (a trained writer, say);
        # readers, and the token counts of the memory, use ``llm``.
        self.writer_llm = writer_llm if writer_llm is not None else llm
        self.suite = suite
        self.strategy = strategy
        if config.note_budget_tokens is None:  # resolved now, so the run's log records the number
            config = dataclasses.replace(config, note_budget_tokens=budget_for(llm))
        self.config = config
        self.folder = Path(out) / strategy.name
        self.log_path = self.folder / "sessions.jsonl"
        self.memory = MemoryFolder(self.folder / "memory" / "live", llm, strategy, config.note_budget_tokens)
        self.session_factory = session_factory or real_session
        self.progress = progress
        self._lines: list[str] = []
        self._records: list[dict[str, Any]] = []

    # -- log -------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {
            "type": "run",
            "strategy": self.strategy.name,
            "suite": self.suite.name,
            "model": str(getattr(self.llm, "name", "") or ""),
            **{k: getattr(self.config, k) for k in _RUN_KEYS},
            # only when it differs, so logs of runs with one model still resume
            **({"writer": str(getattr(self.writer_llm, "name", "") or "")} if self.writer_llm is not self.llm
               else {}),
        }

    def _append(self, record: dict[str, Any]) -> None:
        self._records.append(record)
        self._lines.append(dumps(record))
        # The whole log, atomically: a crash never leaves half a line.
        atomic_write_text(self.log_path, "\n".join(self._lines) + "\n")

    def _load(self) -> dict[tuple, dict[str, Any]]:
        """Finished sessions of an earlier, interrupted run, keyed by (episode, role, index)."""
        old = read_jsonl(self.log_path)
        header = self._header()
        if old:
            if old[0].get("type") != "run":
                raise ConfigError(f"{self.log_path} is not a run log", hint="use a new --out folder")
            differs = [k for k in sorted((set(header) | set(old[0])) - {"type"}) if old[0].get(k) != header.get(k)]
            if differs:
                raise ConfigError(
                    f"{self.log_path} holds a run with other settings ({', '.join(differs)})",
                    hint="resume with the same settings, or write to a new --out folder",
                )
        self._lines, self._records = [], []
        self._append(header)
        return {(r["episode"], r["role"], r["index"]): r for r in old if r.get("type") == "session"}

    # -- run -------------------------------------------------------------------
    def _snapshot_dir(self, episode: int) -> Path:
        return self.folder / "memory" / f"episode-{episode:04d}"

    def run(self) -> RunResult:
        cfg = self.config
        done = self._load()
        total = cfg.episodes * (1 + cfg.readers)
        finished = 0
        # Resume: the memory is whatever the last finished writer left.
        last = max((e for (e, role, _), _r in done.items() if role == "writer"), default=-1)
        self.memory.restore(self._snapshot_dir(last) if last >= 0 else None)
        previous_transcript: list[dict] | None = None
        for episode in range(cfg.episodes):
            family, task = writer_task(self.suite, cfg.seed, episode)
            key = (episode, "writer", 0)
            if key in done and self._snapshot_dir(episode).exists():
                writer = done[key]
            else:
                note_tokens, doc_tokens = self._memory_tokens(previous_transcript)
                writer = self._run_session(episode, "writer", 0, None, task, previous_transcript,
                                           note_tokens, doc_tokens)
                # What readers inherit: the memory right after the writer's reflection.
                after = self._memory_tokens(writer.get("transcript") or None)
                writer["memory_note_tokens"], writer["memory_doc_tokens"] = after
                self.memory.snapshot(self._snapshot_dir(episode))
            self._append(writer)
            finished += 1
            self._tick(finished, total)
            transcript = writer.get("transcript") or None
            note_tokens, doc_tokens = writer["memory_note_tokens"], writer["memory_doc_tokens"]

            jobs = []
            readers: list[dict[str, Any] | None] = []
            for index in range(cfg.readers):
                relation, rtask = reader_task(self.suite, cfg, episode, index, family, task)
                rtask = dataclasses.replace(rtask, max_attempts=cfg.reader_attempts)
                if (episode, "reader", index) in done:
                    readers.append(done[(episode, "reader", index)])
                else:
                    readers.append(None)
                    jobs.append((index, relation, rtask))
            self._run_readers(episode, jobs, readers, transcript, note_tokens, doc_tokens)
            finished += cfg.readers
            self._tick(finished, total)
            self._append(episode_record(self.strategy.name, episode, readers, cfg, note_tokens, doc_tokens))
            previous_transcript = transcript
        self.memory.close()
        return RunResult(self.strategy.name, self.folder, list(self._records))

    def _tick(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def _memory_tokens(self, transcript: list[dict] | None) -> tuple[int, int]:
        """(note tokens, doc tokens) a session inherits; a pasted transcript counts as notes."""
        if self.strategy.transcript:
            text = self.strategy.preamble(transcript)
            return (self.llm.count_tokens(text) if text else 0), 0
        return self.memory.sizes()

    def _options(self, role: str, episode: int, index: int, transcript: list[dict] | None) -> dict[str, Any]:
        return {
            **self.strategy.session_options(role, transcript),
            "max_tokens": self.config.max_tokens,
            "reflection_max_tokens": self.config.reflection_max_tokens,
            "doc_max_tokens": self.config.doc_max_tokens,
            "temperature": self.config.temperature,
            "seed": derive_seed(self.config.seed, episode, role, index),
        }

    def _run_session(self, episode: int, role: str, index: int, relation: str | None, task: Task,
                     transcript: list[dict] | None, note_tokens: int, doc_tokens: int) -> dict[str, Any]:
        notes, docs = self.memory.open()
        try:
            return self._call(role, episode, index, relation, task, notes, docs,
                              self._options(role, episode, index, transcript), note_tokens, doc_tokens,
                              llm=self.writer_llm if role == "writer" else self.llm)
        finally:
            self.memory.close()

    def _call(self, role: str, episode: int, index: int, relation: str | None, task: Task,
              notes: Any, docs: Any, options: dict[str, Any], note_tokens: int,
              doc_tokens: int, llm: Any | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        outcome, error = None, None
        try:
            outcome = self.session_factory(llm if llm is not None else self.llm, notes, docs, options).run(task)
        except LifelongError as exc:
            # One broken task fails its session, not the run.
            error = f"task {task.id}: {type(exc).__name__}: {exc.message}"
        except Exception as exc:  # a bug met by one session: recorded, and the run goes on
            log.exception("session of task %s failed", task.id)
            error = f"task {task.id}: unexpected {type(exc).__name__}: {exc}"
        return session_record(
            strategy=self.strategy.name, episode=episode, role=role, index=index, relation=relation,
            task=task, outcome=outcome, note_tokens=note_tokens, doc_tokens=doc_tokens, error=error,
            latency_s=time.perf_counter() - start,
        )

    def _run_readers(self, episode: int, jobs: list[tuple[int, str, Task]], readers: list,
                     transcript: list[dict] | None, note_tokens: int, doc_tokens: int) -> None:
        """Run the readers still to do; log them in index order whatever order they finish in."""
        if not jobs:
            for r in readers:
                self._append(r)
            return
        written = 0

        def flush() -> None:
            nonlocal written
            while written < len(readers) and readers[written] is not None:
                self._append(readers[written])
                written += 1

        def one(index: int, relation: str, task: Task) -> dict[str, Any]:
            # Readers never write, so each gets its own fresh Notes/Docs over the same files.
            memory = MemoryFolder(self.memory.folder, self.llm, self.strategy, self.config.note_budget_tokens)
            notes, docs = memory.open()
            try:
                return self._call("reader", episode, index, relation, task, notes, docs,
                                  self._options("reader", episode, index, transcript), note_tokens, doc_tokens)
            finally:
                memory.close()

        if self.config.concurrency == 1:
            for index, relation, task in jobs:
                readers[index] = one(index, relation, task)
                flush()
            return

        async def gather() -> None:
            limit = asyncio.Semaphore(self.config.concurrency)

            async def guarded(index: int, relation: str, task: Task) -> None:
                async with limit:
                    readers[index] = await asyncio.to_thread(one, index, relation, task)
                flush()

            await asyncio.gather(*(guarded(*job) for job in jobs))

        asyncio.run(gather())
