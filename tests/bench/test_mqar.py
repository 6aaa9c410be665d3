"""MQAR: every query is answerable from the key-value pairs, and nothing else is scored."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from lifelong.data.base import IGNORE_INDEX
from lifelong.data.mqar import MQAR, MQARConfig
from lifelong.data.registry import get_task
from lifelong.errors import ConfigError


def solve(inputs: list[int], labels: list[int], n_pairs: int) -> dict[int, int]:
    """Reference: read the pairs, answer every query position from them."""
    pairs = {inputs[2 * i]: inputs[2 * i + 1] for i in range(n_pairs)}
    return {t: pairs[inputs[t]] for t, y in enumerate(labels) if y != IGNORE_INDEX}


@pytest.mark.parametrize("vocab,pairs,seq_len", [(256, 16, 64), (64, 8, 200), (8192, 32, 512)])
def test_queries_answerable_and_ranges(vocab, pairs, seq_len):
    task = get_task("mqar", vocab_size=vocab, num_kv_pairs=pairs)
    inputs, labels = task.sample_batch(
        6, seq_len, torch.Generator().manual_seed(random.randrange(1 << 30))
    )
    assert inputs.shape == labels.shape == (6, seq_len)
    half = vocab // 2
    for x, y in zip(inputs.tolist(), labels.tolist()):
        keys, values = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        assert len(set(keys)) == pairs
        assert all(1 <= k < half for k in keys) and all(half <= v < vocab for v in values)
        answers = solve(x, y, pairs)
        assert len(answers) == pairs  # every key asked exactly once
        assert sorted(x[t] for t in answers) == sorted(keys)
        for t, value in answers.items():
            assert t >= 2 * pairs  # queries come after the pairs
            assert y[t] == value
            if t + 1 < seq_len:
                assert x[t + 1] == value  # labels are the next input token (shifted)


def test_gaps_follow_a_power_law():
    task = MQAR(MQARConfig(vocab_size=512, num_kv_pairs=8))
    rng = random.Random(0)
    gaps = []
    for _ in range(200):
        _, _, meta = task.make(rng, 1024)
        gaps += [(p - 16) // 2 + 1 for p in meta["query_positions"]]
    space = (1025 - 16) // 2
    # Uniform slots would have a median near space / 2; the power law crowds them early.
    assert statistics.median(gaps) < space / 4
    assert max(gaps) > space / 2  # ...with a long tail


def test_seeds_reproduce():
    task = get_task("mqar")
    a = task.sample_batch(4, 128, torch.Generator().manual_seed(5))
    b = task.sample_batch(4, 128, torch.Generator().manual_seed(5))
    c = task.sample_batch(4, 128, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    e1, e2 = task.eval_examples(3, 256, seed=1), task.eval_examples(3, 256, seed=1)
    assert [e.input_ids for e in e1] == [e.input_ids for e in e2]
    assert e1[0].input_ids != task.eval_examples(1, 256, seed=2)[0].input_ids


def test_too_short_or_too_many_keys():
    with pytest.raises(ConfigError):
        get_task("mqar", num_kv_pairs=16).sample_batch(1, 40, torch.Generator())
    with pytest.raises(ConfigError):
        get_task("mqar", vocab_size=16, num_kv_pairs=9)
