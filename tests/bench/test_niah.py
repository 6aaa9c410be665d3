"""RULER-style NIAH and VT: answers follow from the needles; needles once; lengths as asked."""

from __future__ import annotations

import random
import re

import pytest
import torch

from lifelong.data import haystack
from lifelong.data.base import EvalExample
from lifelong.data.registry import get_task
from lifelong.errors import ConfigError

NIAH = ["s_niah_1", "s_niah_2", "s_niah_3", "mk_niah", "mv_niah", "mq_niah"]
NEEDLE = re.compile(
    r"One of the special magic (numbers|uuids) for ([^\W\d_]+-[^\W\d_]+) is: ([0-9a-f-]+)\."
)
QUERY = re.compile(r"What are all the special magic (?:numbers|uuids) for (.+?) mentioned")


def solve_niah(text: str) -> list[str]:
    """Reference: collect every needle, read the queried keys, list their values in order."""
    facts: dict[str, list[str]] = {}
    for _, key, value in NEEDLE.findall(text):
        facts.setdefault(key, []).append(value)
    keys = re.split(r", and |, ", QUERY.search(text).group(1))
    return [v for k in keys for v in facts[k]]


def solve_vt(text: str) -> set[str]:
    """Reference: run the assignments in order, return the variables holding the value."""
    env: dict[str, str] = {}
    for name, rhs in re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d+)\.", text):
        env[name] = env[rhs[4:]] if rhs.startswith("VAR ") else rhs
    value = re.search(r"assigned the value (\d+) in the text above", text).group(1)
    return {k for k, v in env.items() if v == value}


def _check_exact_tokens(task, ex):
    ids = task.encode_pieces(ex.pieces)
    text = "".join(ex.pieces)
    assert task.tokenizer.encode(text) == ids  # piecewise encoding is the real encoding
    assert task.tokenizer.decode(ids) == text
    return ids, text


@pytest.mark.parametrize("name", NIAH)
@pytest.mark.parametrize("spec,length", [("bpe:4096", 512), ("bpe:4096", 2048), ("byte", 1024)])
def test_needles_answer_and_length(name, spec, length):
    task = get_task(name, tokenizer=spec)
    rng = random.Random()
    for _ in range(3):
        ex = task.make(random.Random(rng.randrange(1 << 30)), length - 1)
        ids, text = _check_exact_tokens(task, ex)
        # Values of one key may sit in any order in the text.
        assert sorted(solve_niah(text)) == sorted(ex.references)
        # Each needle exactly once; each value nowhere else in the prompt.
        needles = NEEDLE.findall(text)
        assert len(needles) == len(set(needles)) == sum(len(v) for v in ex.meta["values"].values())
        for values in ex.meta["values"].values():
            for v in values:
                assert text.count(v) == 1
        # Prompt + answer + bos + eos fill length + 1 tokens, within one sentence.
        total = 1 + len(ids) + task.count(ex.answer) + 1
        assert length + 1 - 32 <= total <= length + 1, total
        assert ex.answer.strip().rstrip(".").split(", ") == ex.references


@pytest.mark.parametrize("spec,length", [("bpe:4096", 1024), ("byte", 2048)])
def test_variable_tracking_chain(spec, length):
    task = get_task("vt", tokenizer=spec, num_chains=2)
    for seed in range(5):
        ex = task.make(random.Random(seed), length - 1)
        ids, text = _check_exact_tokens(task, ex)
        assert solve_vt(text) == set(ex.references)
        assert len(ex.references) == 5
        for stmt in re.findall(r"VAR [A-Z]{5} = (?:VAR [A-Z]{5}|\d+)\.", text):
            assert text.count(stmt) == 1
        total = 1 + len(ids) + task.count(ex.answer) + 1
        assert length + 1 - 32 <= total <= length + 1


def test_noise_haystack_is_rulers_filler():
    ex = get_task("s_niah_1").make(random.Random(0), 511)
    body = "".join(ex.pieces[1:-2])
    stripped = NEEDLE.sub("", body)
    sentences = set(haystack.split_sentences(stripped))
    assert sentences <= set(haystack.NOISE_SENTENCES)


def test_depths_spread_over_the_context():
    task = get_task("s_niah_2")
    examples = task.eval_examples(5, 1024, seed=0)
    depths = [e.meta["depth"] for e in examples]
    assert depths == sorted(depths)
    assert depths[0] < 0.1 and depths[-1] > 0.9
    for e in examples:
        assert e.input_ids[0] == task.tokenizer.bos_id
        assert task.tokenizer.decode(e.input_ids).endswith("mentioned in the provided text are")


def test_seeds_reproduce_and_differ():
    task = get_task("mk_niah")
    a = task.eval_examples(2, 1024, seed=3)
    b = task.eval_examples(2, 1024, seed=3)
    c = task.eval_examples(2, 1024, seed=4)
    assert [x.input_ids for x in a] == [x.input_ids for x in b]
    assert a[0].input_ids != c[0].input_ids
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x1, y1 = task.sample_batch(2, 512, g1)
    x2, y2 = task.sample_batch(2, 512, g2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_training_batch_scores_only_the_answer():
    task = get_task("s_niah_3")
    tok = task.tokenizer
    inputs, labels = task.sample_batch(3, 700, torch.Generator().manual_seed(0))
    assert inputs.shape == labels.shape == (3, 700)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        scored = [t for t, v in enumerate(y) if v != -100]
        assert scored == list(range(scored[0], scored[-1] + 1))
        assert y[scored[-1]] == tok.eos_id
        answer = tok.decode([y[t] for t in scored])
        prompt = tok.decode(x[: scored[0] + 1])
        assert solve_niah(prompt) == [answer.strip().rstrip(".")]
        assert x[0] == tok.bos_id
        for t in scored[:-1]:
            assert x[t + 1] == y[t]


def test_scoring_is_fraction_of_references_found():
    task = get_task("mv_niah")
    ex = EvalExample(input_ids=[], references=["1111111", "2222222", "3333333", "4444444"])
    assert task.score(" 1111111, 2222222, 3333333, 4444444.", ex) == 1.0
    assert task.score("2222222 and 4444444", ex) == 0.5
    assert task.score("no idea", ex) == 0.0


def test_too_short_a_length_says_so():
    with pytest.raises(ConfigError) as err:
        get_task("s_niah_2", tokenizer="byte").eval_examples(1, 128, seed=0)
    assert "length" in err.value.hint
