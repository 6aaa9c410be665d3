"""The harness with learners that follow the protocol without a model: the retention
matrix is filled in the right cells, the metrics follow from it, results are written.
The in-context learner's prompt assembly is pinned with a word-counting stand-in for
the tokenizer (only the assembly is under test; the real model runs in test_real_model)."""

from __future__ import annotations

import json

import pytest

from lifelong.continual.harness import aggregate, run_stream, write_results
from lifelong.continual.learners import (
    Answer,
    InContextLearner,
    Learner,
    MemoryCost,
    make_learner,
)
from lifelong.data import classinc, novel_lang
from lifelong.data.base import ContinualTask, Query
from lifelong.data.registry import get_stream
from lifelong.errors import ConfigError


class KeepLast:
    """Remembers the material of the last ``k`` tasks and answers with the solvers."""

    def __init__(self, k: int) -> None:
        self.name, self.k, self.kept = f"keep-last-{k}", k, []

    def learn(self, task: ContinualTask) -> None:
        self.kept = (self.kept + [task.material])[-self.k:]
        self.log = [f"learnt {task.name}"]

    def answer(self, query: Query) -> Answer:
        if "Request: " in query.prompt:
            found = classinc.solve(self.kept, query.prompt.split("\n")[0].removeprefix("Request: "))
            return Answer(found[0] if found else "", 7)
        for material in self.kept:
            try:
                return Answer(novel_lang.solve(material, query.meta["source"]), 7)
            except ValueError:
                continue
        return Answer("", 7)

    def memory(self) -> MemoryCost:
        return MemoryCost(len(self.kept), sum(len(m) for m in self.kept))


def test_a_learner_that_keeps_only_the_last_task_forgets_everything_before() -> None:
    tasks = get_stream("class_incremental", 0, tasks=3, classes=2, test=2)
    assert isinstance(KeepLast(1), Learner)
    cells = []
    r = run_stream(KeepLast(1), tasks, stream="class_incremental", seed=0,
                   on_cell=lambda i, j, v: cells.append((i, j)))
    assert cells == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert r.R == [[1.0, None, None], [0.0, 1.0, None], [0.0, 0.0, 1.0]]
    assert r.metrics == {"average": pytest.approx(1 / 3), "bwt": -1.0, "forgetting": 1.0}
    assert r.cost["queries"] == 6 * 4 and r.cost["context_tokens_per_query"] == 7.0
    assert r.cost["memory_tokens"] == 1.0
    assert r.learner_log == ["learnt task2"]
    # a constant label is right for the queries of one class of two (1 of 2 classes, 2 queries each)
    assert r.floor == [0.5, 0.5, 0.5]


def test_a_learner_that_keeps_two_tasks_forgets_only_the_oldest() -> None:
    tasks = get_stream("class_incremental", 1, tasks=3, classes=2, test=2)
    r = run_stream(KeepLast(2), tasks, upper=True)
    # the upper triangle: tasks not learnt yet score 0
    assert r.R == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    assert r.metrics["bwt"] == -0.5 and r.metrics["forgetting"] == 0.5


def test_translation_stream_is_scored_with_chrf() -> None:
    tasks = get_stream("novel_translation", 2, test=3, parallel=2)
    r = run_stream(KeepLast(1), tasks)
    assert r.metric == "chrF"
    assert r.R[0][0] == pytest.approx(100.0) and r.R[1][1] == pytest.approx(100.0)
    assert r.R[1][0] == 0.0  # nothing answered: B's material cannot translate A
    # the floor: every query answered with the first parallel sentence's English
    for task, floor in zip(tasks, r.floor):
        refs = [q.reference for q in task.queries]
        assert floor == novel_lang.chrf([task.practice[0].reference] * len(refs), refs)
        assert 5.0 < floor < 60.0


def test_aggregate_and_written_results(tmp_path) -> None:
    runs = [run_stream(KeepLast(k), get_stream("class_incremental", s, tasks=2, classes=2, test=1),
                       stream="class_incremental", seed=s) for s, k in ((0, 1), (1, 2))]
    for r in runs:
        r.learner = "mixed"
    agg = aggregate(runs)
    assert agg["R_mean"] == [[1.0, None], [0.5, 1.0]]
    assert agg["bwt"]["mean"] == -0.5 and agg["bwt"]["std"] == pytest.approx(2 ** 0.5 / 2)
    write_results(tmp_path, runs, [agg])
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines] == [0, 1]
    assert json.loads((tmp_path / "summary.json").read_text())[0]["learner"] == "mixed"
    assert (tmp_path / "class_incremental-mixed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class WordCounter:
    """Stands in for a model's tokenizer and window where only prompt assembly is tested."""

    def __init__(self, window: int) -> None:
        self.context_window = window

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _task(name: str, lines: int) -> ContinualTask:
    material = "\n".join(f"{name} line{i} x" for i in range(lines))  # 3 words a line
    return ContinualTask(name, material, [], [], "accuracy", classinc.accuracy)


def test_in_context_learner_keeps_everything_that_fits_in_order() -> None:
    icl = InContextLearner(WordCounter(1000), reserve=0)
    for name in ("a", "b", "c"):
        icl.learn(_task(name, 2))
    q = Query("Request: x\nLabel:", "y", max_tokens=4)
    assert icl.prompt(q) == "a line0 x\na line1 x\n\nb line0 x\nb line1 x\n\nc line0 x\nc line1 x\n\n" + q.prompt


def test_in_context_learner_drops_the_oldest_first_then_cuts_the_oldest_lines() -> None:
    # room = 20 - 0 - 4 (answer) - 3 (query) = 13 words: c (6) whole, then b's last two lines (6)
    icl = InContextLearner(WordCounter(20), reserve=0)
    for name in ("a", "b", "c"):
        icl.learn(_task(name, 2 if name != "b" else 4))
    q = Query("Request: x\nLabel:", "y", max_tokens=4)
    assert icl.context(q) == "b line2 x\nb line3 x\n\nc line0 x\nc line1 x"
    assert icl.memory().tokens == 24


def test_unknown_learners_and_empty_memory_learners_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown learner"):
        make_learner("hope", WordCounter(10))
    with pytest.raises(ConfigError, match="learns nothing"):
        make_learner("memory", WordCounter(10), practice=0)
