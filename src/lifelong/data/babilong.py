"""BABILong (Kuratov et al., 2024): bAbI stories hidden in long book text.

A story from ``lifelong.data.babi`` has its facts inserted, in order, at random
sentence boundaries of Gutenberg book text (``lifelong.data.haystack``), until the
example fills the requested length; the question comes last. Length 0 ("0k") is
the story alone. Book sentences that mention any word of the bAbI world (a name,
a room, an object, a direction) are left out of the distractor, so the story is the
only evidence.

Scoring is BABILong's label matching: the output's first sentence must mention the
target label and no other label of the task (labels named in the question do not
count).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from lifelong.data import babi, haystack
from lifelong.data.base import EvalExample, TextExample, TextTask
from lifelong.data.niah import assemble
from lifelong.errors import ConfigError

TASKS: dict[str, dict[str, Any]] = {f"babilong_qa{i}": {"qa": f"qa{i}"} for i in range(1, 6)}

QUESTION = "\nQuestion: {question}"
ANSWER_PREFIX = "\nAnswer:"


@dataclass
class BABILongConfig:
    qa: str = "qa1"
    # "book" (Gutenberg) | "essay" | "none" (the story alone at any length, e.g. to
    # train on stories first)
    distractor: str = "book"
    tokenizer: str | None = None


def build(name: str, **options: Any) -> BABILong:
    opts = {**TASKS[name], **options}
    try:
        return BABILong(name, BABILongConfig(**opts))
    except TypeError as exc:
        raise ConfigError(f"bad option for task {name!r}: {exc}") from exc


@functools.lru_cache(maxsize=2)
def distractor_sentences(source: str) -> tuple[str, ...]:
    """Book (or essay) sentences that name nothing of the bAbI world."""
    if source == "book":
        sentences = haystack.book_sentences()
    elif source == "essay":
        sentences = haystack.essay_sentences()
    else:
        raise ConfigError(f"unknown distractor {source!r}", hint="use 'book', 'essay' or 'none'")
    banned = babi.vocabulary()
    word = re.compile(r"[a-z]+")
    return tuple(s for s in sentences if not banned.intersection(word.findall(s.lower())))


class BABILong(TextTask):
    def __init__(self, name: str, config: BABILongConfig) -> None:
        super().__init__(config.tokenizer)
        if config.qa not in babi.TASK_LABELS:
            raise ConfigError(f"unknown bAbI task {config.qa!r}", hint="use qa1 .. qa5")
        self.name = name
        self.config = config
        if config.distractor != "none":
            distractor_sentences(config.distractor)  # a bad name fails here, not mid-training
        self.labels = babi.TASK_LABELS[config.qa]

    def make(self, rng: random.Random, budget: int, depth: float | None = None) -> TextExample:
        story = babi.generate(self.config.qa, rng)
        answer = f" {story.answer}."
        tail = [QUESTION.format(question=story.question), ANSWER_PREFIX]
        # budget < 0 is length 0: the facts alone.
        alone = budget < 0 or self.config.distractor == "none"
        source = () if alone else distractor_sentences(self.config.distractor)
        if budget < 0:
            budget = 1 << 30
        pieces, positions = assemble(
            self, rng, budget, source, "", story.facts, None, tail, answer, in_order=True
        )
        return TextExample(
            pieces=[p for p in pieces if p],
            answer=answer,
            references=[story.answer],
            question=story.question,
            meta={"facts": story.facts, "fact_positions": positions, "config": asdict(self.config)},
        )

    def score(self, output: str, example: EvalExample) -> float:
        return float(compare_answers(example.references[0], output, example.question, self.labels))


def compare_answers(target: str, output: str, question: str, labels: tuple[str, ...]) -> bool:
    """BABILong's metric: the first sentence names the target and no other label.

    As in BABILong's ``metrics.compare_answers``: lowercase; keep the output up to the
    first period (and before any "question" the model starts writing); labels the
    question mentions are never counted; correct iff the labels left are exactly the
    target (for a comma-separated target: exactly its parts).
    """
    text = output.lower().split(".")[0]
    for stop in ("<context>", "<example>", "question"):
        text = text.split(stop)[0]
    labels_l = {label.lower() for label in labels}
    in_question = {label for label in labels_l if label in question.lower()}
    found = {label for label in labels_l if label in text} - in_question
    target = target.lower()
    parts = [t.strip() for t in target.split(",")] if "," in target else [target]
    return found == set(parts)
