"""The protocol as an environment for training the writer.

A *state* is one reflection to write: a world (suite seed), an episode of a
sequential run on one memory, the memory as it stood before that episode's
writer session, the writer's task and what its session did (answer, result,
feedback). Its prompt is exactly the note prompt a ``Session`` sends after
that task (``Session.note_prompt``: instructions, format examples, the current
notes with their ids, the task, the answer, the result) — so a policy trained
on these prompts is a writer ``lifelong learn eval --writer`` can use.

``score(state, completion)`` is the protocol's reward for that completion: the
completion is applied to a copy of the state's memory exactly as a session
applies a reflection (``Session.apply_note``: a new note, ``EDIT``,
``DELETE``, ``NONE``, with every check), then the episode's readers — the
same reader tasks the protocol draws for (seed, episode), same / similar /
dissimilar — run with that memory, and ``episode_record`` turns their scores,
the note tokens and the context tokens into the reward, every term kept.

The states of a run come from rolling the sequential run with a writer
(``roll``): the base model, by default, so the memory a state holds is what an
untrained writer leaves — with its wrong notes, and in ``onboarding-drift``
worlds with notes gone stale — which is what ``EDIT`` and ``DELETE`` can earn
reward on.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.learn.protocol import (
    ProtocolConfig,
    derive_seed,
    episode_record,
    reader_task,
    real_session,
    writer_task,
)
from lifelong.learn.strategies import MemoryFolder, Strategy, get_strategy
from lifelong.learn.suites import Suite
from lifelong.task import Task, TaskFamily

Writer = Callable[[str], str]  # note prompt -> the note line


@dataclass
class WriterState:
    """One reflection to write (see the module's docstring)."""

    key: str  # "<seed>/<episode>"
    seed: int
    episode: int
    family: TaskFamily
    task: Task
    outcome: Any  # the writer session's Outcome, before reflection
    memory: Path  # snapshot of the memory the session had
    prompt: str
    notes_before: str

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "seed": self.seed, "episode": self.episode, "task_id": self.task.id,
                "writer_score": self.outcome.score, "notes_before": self.notes_before}


def note_op(text: str) -> str:
    """What a note line asks for: "none", "edit", "delete", "add" or "empty"."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "").strip('"')
    if not first:
        return "empty"
    if first.upper().startswith("NONE"):
        return "none"
    m = re.match(r"^(EDIT|DELETE)\s*\[?\d+", first, re.I)
    return m.group(1).lower() if m else "add"


class WriterEnv:
    """States and rewards of the protocol for one suite.

    ``suite_for(seed)`` builds the world of a seed (``load_suite(name, seed)``);
    ``llm`` runs the writer's task and the readers (the frozen model); memory
    folders go under ``folder``. ``session_factory`` is the protocol's (the real
    ``Session`` unless a test pins down arithmetic with a scripted one).
    """

    def __init__(self, llm: Any, suite_for: Callable[[int], Suite], config: ProtocolConfig,
                 folder: str | Path, *, strategy: Strategy | str = "notes",
                 session_factory: Callable[..., Any] | None = None) -> None:
        self.llm = llm
        self.suite_for = suite_for
        if config.note_budget_tokens is None:
            from lifelong.context.notes import budget_for

            config = dataclasses.replace(config, note_budget_tokens=budget_for(llm))
        self.config = config
        self.folder = Path(folder)
        self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
        if not self.strategy.notes or self.strategy.docs or self.strategy.transcript:
            raise ValueError("the writer environment trains the note: use a notes strategy without docs")
        self.session_factory = session_factory or real_session
        self._suites: dict[int, Suite] = {}
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._scratch = 0

    def suite(self, seed: int) -> Suite:
        if seed not in self._suites:
            self._suites[seed] = self.suite_for(seed)
        return self._suites[seed]

    def _cfg(self, seed: int) -> ProtocolConfig:
        return dataclasses.replace(self.config, seed=seed)

    def _options(self, role: str, seed: int, episode: int, index: int) -> dict[str, Any]:
        cfg = self.config
        return {
            **self.strategy.session_options(role, None),
            "reflect": False,  # the reflection is the policy's, written separately
            "max_tokens": cfg.max_tokens,
            "reflection_max_tokens": cfg.reflection_max_tokens,
            "doc_max_tokens": cfg.doc_max_tokens,
            "temperature": cfg.temperature,
            "seed": derive_seed(seed, episode, role, index),
        }

    def _memory(self, folder: Path) -> MemoryFolder:
        return MemoryFolder(folder, self.llm, self.strategy, self.config.note_budget_tokens)

    # -- states --------------------------------------------------------------
    def roll(self, seed: int, episodes: int, writer: Writer | None = None) -> list[WriterState]:
        """The states of a sequential run of ``episodes`` on world ``seed``, the memory
        carried from one episode to the next by ``writer``'s reflections (default: the
        frozen model, greedy, as a session reflects)."""
        write = writer or self._base_writer
        live = self._memory(self.folder / f"world-{seed}" / "live")
        live.restore(None)
        states = []
        suite = self.suite(seed)
        for episode in range(episodes):
            family, task = writer_task(suite, seed, episode)
            snap = self.folder / f"world-{seed}" / f"episode-{episode:04d}"
            live.snapshot(snap)
            notes, docs = live.open()
            try:
                session = self.session_factory(self.llm, notes, docs, self._options("writer", seed, episode, 0))
                outcome = session.run(task)
                prompt = session.note_prompt(task, outcome)
                state = WriterState(f"{seed}/{episode}", seed, episode, family, task, copy.deepcopy(outcome),
                                    snap, prompt, notes.render())
                session.apply_note(write(prompt), task, outcome)
            finally:
                live.close()
            states.append(state)
        return states

    def _base_writer(self, prompt: str) -> str:
        cfg = self.config
        return self.llm.complete(prompt, max_tokens=cfg.reflection_max_tokens, stop=["\n"],
                                 temperature=0.0, seed=0).text

    # -- reward --------------------------------------------------------------
    def reader_tasks(self, state: WriterState) -> list[tuple[str, Task]]:
        """The episode's reader tasks, exactly as the protocol draws them."""
        cfg = self._cfg(state.seed)
        out = []
        for index in range(cfg.readers):
            relation, task = reader_task(self.suite(state.seed), cfg, state.episode, index, state.family, state.task)
            out.append((relation, dataclasses.replace(task, max_attempts=cfg.reader_attempts)))
        return out

    def score(self, state: WriterState, completion: str) -> dict[str, Any]:
        """The protocol's reward of ``completion`` as the reflection of ``state``: the
        episode record (reward, reader score, same / similar / dissimilar, note tokens,
        context tokens, penalties) plus what the completion did (op, applied, note text)."""
        self._scratch += 1
        live = self._memory(self.folder / "scratch" / f"{self._scratch % 2}")
        live.restore(state.memory)
        outcome = copy.deepcopy(state.outcome)
        notes, docs = live.open()
        try:
            session = self.session_factory(self.llm, notes, docs, self._options("writer", state.seed,
                                                                                 state.episode, 0))
            touched = session.apply_note(completion, state.task, outcome)
            after = notes.render()
        finally:
            live.close()
        line = next((ln.strip() for ln in completion.splitlines() if ln.strip()), "")
        info = {"key": state.key, "op": note_op(completion), "applied": touched is not None,
                "note": line[:300], "warnings": list(getattr(outcome, "warnings", []) or [])[-1:]}
        cached = self._cache.get((state.key, after))
        if cached is None:
            cached = self._readers(state, live)
            self._cache[(state.key, after)] = cached
        return {**cached, **info}

    def _readers(self, state: WriterState, live: MemoryFolder) -> dict[str, Any]:
        records = []
        note_tokens, doc_tokens = live.sizes()
        for index, (relation, task) in enumerate(self.reader_tasks(state)):
            notes, docs = live.open()
            try:
                out = self.session_factory(self.llm, notes, docs,
                                           self._options("reader", state.seed, state.episode, index)).run(task)
                score, error = out.score, getattr(out, "error", None)
            except Exception as exc:  # one broken task fails its reader, as in the protocol
                out, score, error = None, None, f"{type(exc).__name__}: {exc}"
            finally:
                live.close()
            records.append({"relation": relation, "score": score, "error": error,
                            "context_tokens": 0 if out is None else getattr(out, "context_tokens", 0),
                            "answer": None if out is None else getattr(out, "answer", None)})
        rec = episode_record(self.strategy.name, state.episode, records, self._cfg(state.seed),
                             note_tokens, doc_tokens)
        rec["reader_answers"] = [r["answer"] for r in records]
        return rec
