"""bAbI stories and BABILong examples: world rules hold, answers follow from the facts."""

from __future__ import annotations

import random
import re

import pytest

from lifelong.data import babi
from lifelong.data.babilong import compare_answers, distractor_sentences
from lifelong.data.base import EvalExample
from lifelong.data.registry import get_task

MOVE = re.compile(r"^(\w+) (?:moved|went|journeyed|travelled|went back) to the (\w+)\.$")
GET = re.compile(r"^(\w+) (?:picked up|got|grabbed|took) the (\w+) there\.$")
DROP = re.compile(r"^(\w+) (?:dropped|discarded|put down|left) the (\w+)\.$")
GIVE = re.compile(r"^(\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.$")
REL = re.compile(r"^The (\w+) is (north|south|east|west) of the (\w+)\.$")
OPP = {"north": "south", "south": "north", "east": "west", "west": "east"}


class Referee:
    """An independent reading of a story: checks every action against the world's rules
    and keeps what the story tells about where people and things are."""

    def __init__(self) -> None:
        self.at: dict[str, str] = {}  # actor -> place, once told
        self.holder: dict[str, str | None] = {}
        self.lies: dict[str, str] = {}  # object -> place, once known and not held
        self.places: dict[str, list[str]] = {}  # object -> known places in order
        self.gives: list[tuple[str, str, str]] = []

    def where_is(self, obj: str) -> str | None:
        h = self.holder.get(obj)
        return self.at[h] if h else self.lies.get(obj)

    def _visit(self, obj: str, place: str) -> None:
        seq = self.places.setdefault(obj, [])
        if not seq or seq[-1] != place:
            seq.append(place)

    def read(self, fact: str) -> None:
        if m := MOVE.match(fact):
            actor, place = m.groups()
            assert self.at.get(actor) != place, f"moved to where they are: {fact}"
            self.at[actor] = place
            for obj, h in self.holder.items():
                if h == actor:
                    self._visit(obj, place)
        elif m := GET.match(fact):
            actor, obj = m.groups()
            assert actor in self.at, f"an actor nowhere picks something up: {fact}"
            assert self.holder.get(obj) is None, f"taken while held: {fact}"
            if obj in self.lies:
                assert self.lies[obj] == self.at[actor], f"taken where it is not: {fact}"
            self.holder[obj] = actor
            self._visit(obj, self.at[actor])
        elif m := DROP.match(fact):
            actor, obj = m.groups()
            assert self.holder.get(obj) == actor, f"dropped by a non-holder: {fact}"
            self.holder[obj] = None
            self.lies[obj] = self.at[actor]
        elif m := GIVE.match(fact):
            giver, obj, taker = m.groups()
            assert self.holder.get(obj) == giver, f"given by a non-holder: {fact}"
            assert giver != taker and self.at.get(taker) == self.at[giver], f"apart: {fact}"
            self.holder[obj] = taker
            self.gives.append((giver, obj, taker))
        else:
            raise AssertionError(f"not a bAbI sentence: {fact}")


def solve(task: str, facts: list[str], question: str) -> set[str]:
    """Every answer the facts support (a correct story has exactly one)."""
    if task == "qa4":
        rel = set()
        for f in facts:
            x, d, y = REL.match(f).groups()
            rel |= {(x, d, y), (y, OPP[d], x)}
        if m := re.match(r"What is (\w+) of the (\w+)\?", question):
            return {x for x, d, y in rel if (d, y) == m.groups()}
        x, d = re.match(r"What is the (\w+) (\w+) of\?", question).groups()
        return {y for xx, dd, y in rel if (xx, dd) == (x, d)}
    ref = Referee()
    for f in facts:
        ref.read(f)
    if m := re.match(r"Where is (\w+)\?", question):
        return {ref.at[m.group(1)]}
    if m := re.match(r"Where is the (\w+)\?", question):
        return {ref.where_is(m.group(1))}
    if m := re.match(r"Where was the (\w+) before the (\w+)\?", question):
        seq = ref.places[m.group(1)]
        return {seq[i - 1] for i, p in enumerate(seq) if p == m.group(2) and i > 0}
    g = ref.gives
    if m := re.match(r"Who gave the (\w+) to (\w+)\?", question):
        return {a for a, o, b in g if (o, b) == m.groups()}
    if m := re.match(r"Who received the (\w+)\?", question):
        return {b for a, o, b in g if o == m.group(1)}
    if m := re.match(r"What did (\w+) give to (\w+)\?", question):
        return {o for a, o, b in g if (a, b) == m.groups()}
    if m := re.match(r"Who did (\w+) give the (\w+) to\?", question):
        return {b for a, o, b in g if (a, o) == m.groups()}
    if m := re.match(r"Who gave the (\w+)\?", question):
        return {a for a, o, b in g if o == m.group(1)}
    raise AssertionError(f"unknown question {question}")


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa4", "qa5"])
def test_stories_obey_the_world_and_answer_uniquely(task):
    rng = random.Random()
    kinds = set()
    for _ in range(300):
        story = babi.generate(task, random.Random(rng.randrange(1 << 30)))
        lo, hi = babi.FACTS[task]
        assert lo <= len(story.facts) <= hi
        assert solve(task, story.facts, story.question) == {story.answer}
        assert story.answer in babi.TASK_LABELS[task]
        kinds |= {a[0] for a in story.actions}
    expected = {
        "qa1": {"move"},
        "qa2": {"move", "get", "drop"},
        "qa3": {"move", "get", "drop"},
        "qa4": {"rel"},
        "qa5": {"move", "get", "drop", "give"},
    }[task]
    assert kinds == expected


def test_referee_catches_broken_rules():
    with pytest.raises(AssertionError):
        solve("qa2", ["Mary went to the kitchen.", "John dropped the milk."], "Where is Mary?")
    with pytest.raises(AssertionError):
        solve(
            "qa5",
            [
                "Bill went to the office.",
                "Bill got the milk there.",
                "Fred went to the garden.",
                "Bill gave the milk to Fred.",
            ],
            "Who gave the milk?",
        )


def test_same_seed_same_story():
    for task in ("qa1", "qa3", "qa5"):
        a, b = babi.generate(task, random.Random(9)), babi.generate(task, random.Random(9))
        assert (a.facts, a.question, a.answer) == (b.facts, b.question, b.answer)
        c = babi.generate(task, random.Random(10))
        assert (a.facts, a.question) != (c.facts, c.question)


@pytest.mark.parametrize("name", [f"babilong_qa{i}" for i in range(1, 6)])
@pytest.mark.parametrize("spec,length", [("bpe:4096", 0), ("bpe:4096", 1024), ("byte", 2048)])
def test_babilong_examples(name, spec, length):
    task = get_task(name, tokenizer=spec)
    qa = name.split("_")[1]
    for ex in task.eval_examples(3, length, seed=random.randrange(1 << 30)):
        text = task.tokenizer.decode(ex.input_ids)
        assert ex.input_ids[0] == task.tokenizer.bos_id
        assert task.tokenizer.encode(text) == ex.input_ids[1:]
        context, question = text.rsplit("\nQuestion: ", 1)
        assert question == ex.question + "\nAnswer:"
        facts = ex.meta["facts"]
        # Facts in order, as whole sentences of the context, and nowhere else.
        at = 0
        for f in facts:
            at = context.find(f, at)
            assert at >= 0
            at += len(f)
        assert all(context.count(f) == facts.count(f) for f in facts)
        assert solve(qa, facts, ex.question) == set(ex.references)
        total = len(ex.input_ids) + len(task.tokenizer.encode(ex.meta["answer"])) + 1
        if length == 0:
            assert context == " ".join(facts)
        else:
            assert length + 1 - 32 <= total <= length + 1
            # The distractor names nothing of the bAbI world.
            rest = context
            for f in facts:
                rest = rest.replace(f, "")
            words = set(re.findall(r"[a-z]+", rest.lower()))
            assert not words & babi.vocabulary()


def test_distractor_is_gutenberg_text_without_world_words():
    sentences = distractor_sentences("book")
    assert len(sentences) > 10_000
    assert any("thou" in s.split() for s in sentences)


def test_label_scoring_matches_babilong():
    labels = babi.TASK_LABELS["qa1"]
    assert compare_answers("kitchen", " kitchen.", "Where is Mary?", labels)
    assert compare_answers("kitchen", "The Kitchen. Then the garden.", "Where is Mary?", labels)
    assert not compare_answers("kitchen", "kitchen or garden", "Where is Mary?", labels)
    assert not compare_answers("kitchen", "garden.", "Where is Mary?", labels)
    # A label named in the question never counts.
    q = "Where was the milk before the hallway?"
    assert compare_answers("bathroom", "hallway, then bathroom", q, labels)
    task = get_task("babilong_qa5")
    ex = EvalExample(input_ids=[], references=["Fred"], question="Who gave the milk to Bill?")
    assert task.score(" Fred.", ex) == 1.0
    assert task.score(" Bill.", ex) == 0.0


def test_stories_alone_for_training():
    import torch

    task = get_task("babilong_qa2", distractor="none")
    tok = task.tokenizer
    inputs, labels = task.sample_batch(4, 256, torch.Generator().manual_seed(0))
    for x, y in zip(inputs.tolist(), labels.tolist()):
        scored = [t for t, v in enumerate(y) if v != -100]
        prompt = tok.decode(x[: scored[0] + 1])
        context, question = prompt.split("\nQuestion: ")
        answer = tok.decode([y[t] for t in scored]).strip().rstrip(".")
        facts = context.split(". ")
        facts = [f if f.endswith(".") else f + "." for f in facts]
        assert solve("qa2", facts, question.split("\n")[0]) == {answer}
        assert all(v == tok.pad_id for v in x[scored[-1] + 1 :])
