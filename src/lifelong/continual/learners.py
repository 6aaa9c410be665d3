"""Learners: what runs over a stream of tasks. One small protocol, any kind of memory.

A learner is given each task's material once (``learn``), answers queries
(``answer``), and says what it carries (``memory``). Nothing else: a weight
learner (a CMS retrofit, notes → weights, TTT) is one more object with these
three methods, and the harness runs it on the same stream as the context ones.

Built in:

- ``none``: the model alone, nothing learnt (the floor).
- ``icl``: in-context learning: the material of every task seen so far in the
  prompt, the oldest dropped first when it does not fit the window (then the
  oldest part of what is left is cut), as a user would truncate.
- ``memory``: context memory: after each task the model works a few of the
  task's practice questions with the material in view, is told the answer, and
  reflects (the existing ``Session``): it writes notes and documentation.
  Readers answer with the notes in context and the best-matching documentation
  page put in the prompt. ``file_material=True`` (``memory+docs``) also files
  the material itself as a documentation page, as a person filing the manual
  would; readers then retrieve it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lifelong.data.base import ContinualTask, Query
from lifelong.errors import ConfigError


@dataclass
class Answer:
    text: str
    context_tokens: int  # tokens of the prompt(s) the model read for this answer


@dataclass
class MemoryCost:
    tokens: int  # tokens of memory carried (what a reader may put in its context)
    bytes: int  # bytes of state kept between tasks


@runtime_checkable
class Learner(Protocol):
    name: str

    def learn(self, task: ContinualTask) -> None: ...

    def answer(self, query: Query) -> Answer: ...

    def memory(self) -> MemoryCost: ...


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


class NoMemoryLearner:
    """The model alone: learns nothing (the floor of every benchmark)."""

    name = "none"

    def __init__(self, llm: Any, *, seed: int = 0) -> None:
        self.llm, self.seed = llm, seed

    def learn(self, task: ContinualTask) -> None:
        return None

    def answer(self, query: Query) -> Answer:
        c = self.llm.complete(query.prompt, max_tokens=query.max_tokens, stop=["\n"], temperature=0.0,
                              seed=self.seed)
        return Answer(_first_line(c.text), c.prompt_tokens)

    def memory(self) -> MemoryCost:
        return MemoryCost(0, 0)


class InContextLearner:
    """Everything seen so far in the prompt, truncated to the window from the oldest end."""

    name = "icl"

    def __init__(self, llm: Any, *, seed: int = 0, reserve: int = 64) -> None:
        self.llm, self.seed, self.reserve = llm, seed, reserve
        self.materials: list[str] = []

    def learn(self, task: ContinualTask) -> None:
        self.materials.append(task.material.strip())

    def context(self, query: Query) -> str:
        """The materials that fit before ``query`` in the window (oldest dropped first)."""
        room = int(self.llm.context_window) - self.reserve - query.max_tokens
        room -= self.llm.count_tokens(query.prompt)
        kept: list[str] = []
        used = 0
        for material in reversed(self.materials):
            n = self.llm.count_tokens(material + "\n\n")
            if used + n <= room:
                kept.insert(0, material)
                used += n
                continue
            # The newest material that does not fit whole: keep its end (the oldest part is cut).
            lines = material.splitlines()
            while lines and used + self.llm.count_tokens("\n".join(lines) + "\n\n") > room:
                lines.pop(0)
            if lines:
                kept.insert(0, "\n".join(lines))
            break
        return "\n\n".join(kept)

    def prompt(self, query: Query) -> str:
        ctx = self.context(query)
        return f"{ctx}\n\n{query.prompt}" if ctx else query.prompt

    def answer(self, query: Query) -> Answer:
        c = self.llm.complete(self.prompt(query), max_tokens=query.max_tokens, stop=["\n"], temperature=0.0,
                              seed=self.seed)
        return Answer(_first_line(c.text), c.prompt_tokens)

    def memory(self) -> MemoryCost:
        text = "\n\n".join(self.materials)
        return MemoryCost(self.llm.count_tokens(text) if text else 0, len(text.encode("utf-8")))


class ContextMemoryLearner:
    """Notes and docs written by the model after each task (``Session`` reflection);
    readers answer with the notes and the best-matching documentation page."""

    def __init__(self, llm: Any, *, seed: int = 0, practice: int = 1, file_material: bool = False,
                 page_tokens: int = 1024, reader_steps: int = 0, doc_tokens: int = 96,
                 root: str | Path | None = None) -> None:
        from lifelong.context import Docs, Notes, open_store

        if practice < 0:
            raise ConfigError(f"practice must be 0 or more, got {practice}")
        if practice == 0 and not file_material:
            raise ConfigError("a memory learner with no practice and no filed material learns nothing",
                              hint="give practice >= 1 or file_material=True")
        self.name = "memory+docs" if file_material else "memory"
        self.llm, self.seed = llm, seed
        self.practice, self.file_material = practice, file_material
        self.page_tokens, self.reader_steps, self.doc_tokens = page_tokens, reader_steps, doc_tokens
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="lifelong-continual-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = open_store(f"sqlite:///{self.root / 'memory.db'}")
        self.notes = Notes.for_llm(self.store, "continual", llm, create=True)
        self.docs = Docs(self.store, "continual", self.root / "docs", llm.count_tokens, create=True)
        self.log: list[dict[str, Any]] = []  # what each practice session answered and wrote

    def _config(self, **kw: Any) -> Any:
        from lifelong.context.session import SessionConfig

        return SessionConfig(seed=self.seed, **kw)

    def learn(self, task: ContinualTask) -> None:
        from lifelong.context.session import Session
        from lifelong.task import Task

        if self.file_material:
            self.docs.write(f"{task.name}-material.md", task.material,
                            description=f"The material of {task.name}")
        for q in task.practice[: self.practice]:
            def check(answer: str, ref: str = q.reference) -> float:
                s = float(task.score([answer], [ref]))
                return s / 100.0 if task.metric == "chrF" else s

            def feedback(answer: str, score: float, ref: str = q.reference) -> str:
                return f"The correct answer is: {ref}"

            config = self._config(preamble=task.material, reflect=True, max_steps=0,
                                  max_tokens=q.max_tokens, use_docs=True, doc_max_tokens=self.doc_tokens)
            session = Session(self.llm, self.notes, self.docs, config)
            outcome = session.run(Task(prompt=q.prompt, check=check, feedback=feedback, family=task.name))
            notes = {n.id: n.text for n in self.notes.list()}
            self.log.append({"task": task.name, "answer": outcome.answer, "score": outcome.score,
                             "notes": [notes.get(i, "") for i in outcome.notes_written],
                             "docs": outcome.docs_written, "warnings": outcome.warnings})

    def answer(self, query: Query) -> Answer:
        from lifelong.context.session import Session
        from lifelong.task import Task

        config = self._config(reflect=False, prefetch_docs=1, page_tokens=self.page_tokens,
                              max_steps=self.reader_steps, max_tokens=query.max_tokens)
        outcome = Session(self.llm, self.notes, self.docs, config).run(Task(prompt=query.prompt))
        return Answer(_first_line(outcome.answer), outcome.context_tokens)

    def memory(self) -> MemoryCost:
        tokens = self.notes.tokens()
        size = 0
        for path in self.docs.folder.rglob("*"):
            if path.is_file():
                size += path.stat().st_size
                tokens += self.llm.count_tokens(path.read_text(encoding="utf-8", errors="replace"))
        size += len(self.notes.render().encode("utf-8"))
        return MemoryCost(tokens, size)

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


BUILTIN = ("none", "icl", "memory", "memory+docs")
# Weight memory on the same stream: the embedded Gemma with its last MLPs retrofitted as
# CMS blocks that learn while reading (``lifelong.neural.retrofit``); ``+icl`` also keeps
# the material in its context. Run through transformers, not the llama.cpp model.
WEIGHT_LEARNERS = ("hope-gemma", "hope-gemma+icl")
LEARNERS = BUILTIN + WEIGHT_LEARNERS
_retrofits: dict[str, Any] = {}


def _hope_gemma(path: str = "local") -> Any:
    """The retrofitted embedded model, loaded once per process (each learner gets its
    own session: the CMS levels' learnt weights live in the session, not the module)."""
    if path not in _retrofits:
        from lifelong.neural.retrofit import HopeGemma

        _retrofits[path] = HopeGemma(path)
    return _retrofits[path]


def make_learner(name: str, llm: Any, *, seed: int = 0, **options: Any) -> Learner:
    """A built-in learner by name (``BUILTIN``)."""
    if name == "none":
        return NoMemoryLearner(llm, seed=seed)
    if name == "icl":
        return InContextLearner(llm, seed=seed, **options)
    if name == "memory":
        return ContextMemoryLearner(llm, seed=seed, **options)
    if name == "memory+docs":
        return ContextMemoryLearner(llm, seed=seed, file_material=True, **options)
    if name in WEIGHT_LEARNERS:
        from lifelong.neural.retrofit import RetrofitLearner

        return RetrofitLearner(_hope_gemma(), keep_context=name.endswith("+icl"))
    raise ConfigError(f"unknown learner {name!r}", hint=f"choose from {', '.join(LEARNERS)}")
