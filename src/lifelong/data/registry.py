"""The registry of sequence tasks: names, suites, lengths, and mixtures.

Names: ``mqar``; ``s_niah_1``, ``s_niah_2``, ``s_niah_3``, ``mk_niah``, ``mv_niah``,
``mq_niah``, ``vt``; ``babilong_qa1`` … ``babilong_qa5``. Suites (for
``lifelong bench run --suite``) are a task name or one of ``SUITES``.

Continual-learning streams (``lifelong bench continual``) are named in
``STREAMS``: ``class_incremental`` and ``novel_translation``; ``get_stream(name,
seed, **options)`` builds one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lifelong.data import babilong, classinc, mqar, niah, novel_lang
from lifelong.data.base import ContinualTask, SequenceTask
from lifelong.errors import ConfigError

if TYPE_CHECKING:
    import torch

SUITES: dict[str, tuple[str, ...]] = {
    "mqar": ("mqar",),
    "s_niah": ("s_niah_1", "s_niah_2", "s_niah_3"),
    "niah": ("s_niah_1", "s_niah_2", "s_niah_3", "mk_niah", "mv_niah", "mq_niah", "vt"),
    "ruler": ("s_niah_1", "s_niah_2", "s_niah_3", "mk_niah", "mv_niah", "mq_niah", "vt"),
    "babilong": tuple(f"babilong_qa{i}" for i in range(1, 6)),
}


def task_names() -> list[str]:
    return list(mqar.TASKS) + list(niah.TASKS) + list(babilong.TASKS)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_task(name: str, **options: Any) -> SequenceTask:
    """The task called ``name`` (see the module docstring), built with ``options``.

    Text tasks take ``tokenizer=`` (a spec, see ``lifelong.data.tokenizer``); every task
    takes the options of its config dataclass (e.g. ``mqar``: ``vocab_size``,
    ``num_kv_pairs``).
    """
    key = _canonical(name)
    for module in (mqar, niah, babilong):
        if key in module.TASKS:
            return module.build(key, **options)
    raise ConfigError(f"unknown task {name!r}", hint=f"choose one of: {', '.join(task_names())}")


def suite_tasks(suite: str) -> tuple[str, ...]:
    """Task names of a suite (a suite name, a task name, or a comma-separated list)."""
    names: list[str] = []
    for part in suite.split(","):
        key = _canonical(part)
        if not key:
            continue
        if key in SUITES:
            names.extend(SUITES[key])
        elif key in task_names():
            names.append(key)
        else:
            raise ConfigError(
                f"unknown suite or task {part!r}",
                hint=f"suites: {', '.join(SUITES)}; tasks: {', '.join(task_names())}",
            )
    return tuple(dict.fromkeys(names))


def parse_length(text: str) -> int:
    """'2k' -> 2048, '512' -> 512, '0k' -> 0 (BABILong's facts-only setting)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise ConfigError(f"bad length {text!r}", hint="write lengths like 512, 1k, 16k")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    return int(m.group(1)) * scale


def parse_lengths(text: str) -> list[int]:
    return [parse_length(p) for p in text.split(",") if p.strip()]


class MixedTask:
    """Several tasks with one vocabulary; each batch is split evenly between them."""

    def __init__(self, name: str, tasks: list[SequenceTask]) -> None:
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
        import torch

        n = len(self.tasks)
        sizes = [batch_size // n + (i < batch_size % n) for i in range(n)]
        parts = [t.sample_batch(s, seq_len, generator) for t, s in zip(self.tasks, sizes)]
        parts = [p for p in parts if p[0].shape[0]]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def build_task(name: str, options: dict[str, Any] | None = None) -> SequenceTask | MixedTask:
    """A task by name; a suite name (e.g. ``s_niah``) or "a,b" mixes its tasks."""
    names = suite_tasks(name)
    opts = dict(options or {})
    if len(names) == 1:
        return get_task(names[0], **opts)
    return MixedTask(name, [get_task(n, **opts) for n in names])


# --------------------------------------------------------------------------- continual-learning streams

STREAMS: tuple[str, ...] = (classinc.NAME, novel_lang.NAME)


def get_stream(name: str, seed: int, **options: Any) -> list[ContinualTask]:
    """The tasks of the continual-learning stream ``name`` generated from ``seed``.

    ``class_incremental`` takes the fields of ``classinc.ClassIncConfig`` (``tasks``,
    ``classes``, ``train``, ``test``); ``novel_translation`` takes ``languages`` and the
    fields of ``novel_lang.LanguageConfig`` (``nouns``, ``verbs``, ``adjectives``,
    ``parallel``, ``test``, ``script``).
    """
    key = _canonical(name)
    try:
        if key == classinc.NAME:
            return classinc.build_tasks(seed, classinc.ClassIncConfig(**options))
        if key == novel_lang.NAME:
            languages = options.pop("languages", 2)
            return novel_lang.build_tasks(seed, languages, novel_lang.LanguageConfig(**options))
    except TypeError as exc:
        raise ConfigError(f"bad option for stream {name!r}: {exc}") from None
    raise ConfigError(f"unknown stream {name!r}", hint=f"choose one of: {', '.join(STREAMS)}")
