"""Suites: the task families a protocol run draws from, by name or from a JSONL file.

A ``Suite`` holds one or more ``TaskFamily`` (each a world with its own hidden
knowledge) and a dissimilar pool. The writer's task comes from one family;
"similar" reader tasks come from that same family, "dissimilar" ones from the
pool. Built-in suites: ``onboarding``, ``procedure``, ``mixed`` (both, so a
note from one world is a distraction in the other) and ``onboarding-drift``
(an onboarding world one of whose conventions changes at episode 10, so
notes go stale mid-run). Add your own with
``register_suite(name, factory)`` or a JSONL file (see docs/tasks-format.md).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, ValidationError
from lifelong.learn.dissimilar import DissimilarPool
from lifelong.learn.onboarding import DriftingOnboarding, OnboardingFamily
from lifelong.learn.procedure import ProcedureFamily
from lifelong.task import (
    Checker,
    Task,
    TaskFamily,
    _words,
    answer_line,
    expect_choice,
    expect_number,
    expect_text,
)


@dataclass
class Suite:
    name: str
    families: list[TaskFamily]
    dissimilar: TaskFamily = field(default_factory=DissimilarPool)


SuiteFactory = Callable[[int], Suite]
DRIFT_AT = 10  # the episode from which ``onboarding-drift`` worlds have changed
_SUITES: dict[str, SuiteFactory] = {}


def register_suite(name: str, factory: SuiteFactory) -> None:
    """Make ``factory(seed) -> Suite`` available as ``--suite name``."""
    _SUITES[name] = factory


def suite_names() -> list[str]:
    return sorted(_SUITES)


def load_suite(name_or_path: str, seed: int = 0) -> Suite:
    """A registered suite built for ``seed``, or a suite read from a ``.jsonl`` file."""
    if name_or_path in _SUITES:
        return _SUITES[name_or_path](seed)
    if name_or_path.endswith(".jsonl") or Path(name_or_path).is_file():
        return load_jsonl_suite(name_or_path)
    raise ConfigError(
        f"unknown suite {name_or_path!r}",
        hint=f"use one of {', '.join(suite_names())} or a path to a .jsonl task file",
    )


register_suite("onboarding", lambda seed: Suite("onboarding", [OnboardingFamily(world_seed=seed)]))
register_suite("procedure", lambda seed: Suite("procedure", [ProcedureFamily(world_seed=seed)]))
register_suite(
    "onboarding-drift",
    lambda seed: Suite("onboarding-drift", [DriftingOnboarding(world_seed=seed, change_at=DRIFT_AT)]),
)
register_suite(
    "mixed",
    lambda seed: Suite("mixed", [OnboardingFamily(world_seed=seed), ProcedureFamily(world_seed=seed)]),
)


# --- JSONL suites -------------------------------------------------------------

CHECKS = ("contains", "exact", "choice", "number", "regex")
_KNOWN_KEYS = {
    "id", "family", "role", "prompt", "answer", "check", "alternatives", "options",
    "environment", "feedback", "max_attempts", "metadata",
}


@dataclass
class JsonlFamily:
    """A finite family: the tasks of one ``family`` in a JSONL file."""

    name: str
    tasks: list[Task]

    def sample(self, rng: random.Random) -> Task:
        return rng.choice(self.tasks)


def _expect_exact(expected: str, *alternatives: str) -> Checker:
    targets = {_words(t).strip() for t in (expected, *alternatives)}
    return lambda answer: 1.0 if _words(answer_line(answer)).strip() in targets else 0.0


def _expect_regex(pattern: str) -> Checker:
    compiled = re.compile(pattern, re.IGNORECASE)
    return lambda answer: 1.0 if compiled.search(answer_line(answer)) else 0.0


def task_from_record(record: dict[str, Any], where: str, default_family: str) -> tuple[Task, str]:
    """One JSONL record → (Task, role). ``where`` names the line in errors."""
    tid = record.get("id") if isinstance(record, dict) else None
    label = f"{where} (task {tid!r})" if tid else where

    def bad(problem: str) -> ValidationError:
        return ValidationError(f"{label}: {problem}", hint="see docs/tasks-format.md for the task format")

    if not isinstance(record, dict):
        raise bad("each line must be a JSON object")
    unknown = set(record) - _KNOWN_KEYS
    if unknown:
        raise bad(f"unknown field(s) {sorted(unknown)}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad("'prompt' must be a non-empty string")
    answer = record.get("answer")
    if not isinstance(answer, str | int | float) or isinstance(answer, bool) or str(answer).strip() == "":
        raise bad("'answer' must be a non-empty string or a number")
    kind = record.get("check", "contains")
    if kind not in CHECKS:
        raise bad(f"'check' must be one of {', '.join(CHECKS)}, not {kind!r}")
    alternatives = record.get("alternatives", [])
    if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
        raise bad("'alternatives' must be a list of strings")
    if kind == "contains":
        check = expect_text(str(answer), *alternatives)
    elif kind == "exact":
        check = _expect_exact(str(answer), *alternatives)
    elif kind == "choice":
        options = record.get("options")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise bad("check 'choice' needs 'options', a non-empty list of strings")
        if str(answer).lower() not in [o.lower() for o in options]:
            raise bad(f"answer {answer!r} is not one of the options {options}")
        check = expect_choice(str(answer), options)
    elif kind == "number":
        try:
            check = expect_number(float(answer))
        except ValueError:
            raise bad(f"check 'number' needs a numeric answer, not {answer!r}") from None
    else:
        try:
            check = _expect_regex(str(answer))
        except re.error as exc:
            raise bad(f"answer is not a valid regular expression: {exc}") from None
    environment = record.get("environment", {})
    if not isinstance(environment, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
    ):
        raise bad("'environment' must map document paths to their text")
    feedback_text = record.get("feedback")
    if feedback_text is not None and not isinstance(feedback_text, str):
        raise bad("'feedback' must be a string")
    max_attempts = record.get("max_attempts", 2 if feedback_text else 1)
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise bad("'max_attempts' must be a positive integer")
    role = record.get("role", "task")
    if role not in ("task", "dissimilar"):
        raise bad(f"'role' must be 'task' or 'dissimilar', not {role!r}")
    family = record.get("family", default_family)
    if not isinstance(family, str) or not family:
        raise bad("'family' must be a non-empty string")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad("'metadata' must be an object")
    task = Task(
        prompt=prompt,
        check=check,
        family=family,
        id=str(tid) if tid else f"{family}/{where.rsplit(':', 1)[-1]}",
        environment=dict(environment),
        feedback=(lambda a, s, text=feedback_text: None if s >= 1.0 else text) if feedback_text else None,
        max_attempts=max_attempts,
        metadata={**metadata, "answer": answer, "check": kind},
    )
    return task, role


def load_jsonl_suite(path: str | Path) -> Suite:
    """Read a suite from a JSONL file: one task per line (format in docs/tasks-format.md)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task file {path} does not exist", hint="check the path given to --suite")
    families: dict[str, list[Task]] = {}
    pool: list[Task] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno})",
                hint="each line of a task file is one JSON object; see docs/tasks-format.md",
            ) from None
        task, role = task_from_record(record, where, default_family=path.stem)
        if task.id in seen:
            raise ValidationError(f"{where}: duplicate task id {task.id!r}", hint="give every task its own id")
        seen.add(task.id)
        if role == "dissimilar":
            pool.append(task)
        else:
            families.setdefault(task.family, []).append(task)
    if not families:
        raise ValidationError(
            f"{path.name}: no tasks with role 'task'",
            hint="a suite needs at least one task the writer can be given",
        )
    fams: list[TaskFamily] = [JsonlFamily(name, tasks) for name, tasks in families.items()]
    dissimilar: TaskFamily = JsonlFamily("dissimilar", pool) if pool else DissimilarPool()
    return Suite(path.stem, fams, dissimilar)
