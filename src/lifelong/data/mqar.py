"""Multi-query associative recall (MQAR), the Zoology recipe (Arora et al., 2023).

A sequence starts with ``num_kv_pairs`` key-value pairs ``k1 v1 k2 v2 ...``; keys come
from the lower half of the vocabulary, values from the upper half. Then each key is
asked again, once, in random order: the key is placed in the rest of the sequence at
a gap drawn from a power law (most queries come soon after the pairs, a few far
away), and the model must predict its value at the next position. Every other
position holds a random token (Zoology's ``random_non_queries``), so nothing but
recall helps. The score is the accuracy over the query positions.

Token 0 is never a key or a value; it pads nothing here (every sequence is full) and
is left free for a model's own use.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from lifelong.data.base import IGNORE_INDEX, EvalExample
from lifelong.errors import ConfigError

TASKS: dict[str, dict[str, Any]] = {"mqar": {}}


@dataclass
class MQARConfig:
    vocab_size: int = 256
    num_kv_pairs: int = 16
    power_a: float = 0.01  # gap density ∝ gap**(power_a - 1): Zoology's default
    random_non_queries: bool = True


def build(name: str, **options: Any) -> MQAR:
    options.pop("tokenizer", None)  # MQAR has its own vocabulary
    try:
        return MQAR(MQARConfig(**options))
    except TypeError as exc:
        raise ConfigError(f"bad option for task 'mqar': {exc}") from exc


class MQAR:
    name = "mqar"
    tokenizer = None

    def __init__(self, config: MQARConfig | None = None) -> None:
        self.config = config = config or MQARConfig()
        if config.vocab_size < 8 or config.num_kv_pairs < 1:
            raise ConfigError("mqar needs vocab_size >= 8 and num_kv_pairs >= 1")
        half = config.vocab_size // 2
        if config.num_kv_pairs > half - 1:
            raise ConfigError(
                f"mqar: {config.num_kv_pairs} distinct keys do not fit {half - 1} key tokens",
                hint="raise vocab_size or lower num_kv_pairs",
            )
        self.vocab_size = config.vocab_size
        self.key_range = (1, half)  # [lo, hi)
        self.value_range = (half, config.vocab_size)

    def min_length(self) -> int:
        # The pairs, then one key + value slot per query.
        return 4 * self.config.num_kv_pairs

    def make(self, rng: random.Random, seq_len: int) -> tuple[list[int], list[int], dict]:
        """One sequence of ``seq_len + 1`` tokens as (inputs, shifted labels, meta)."""
        cfg = self.config
        n = cfg.num_kv_pairs
        if seq_len < self.min_length():
            raise ConfigError(
                f"mqar: length {seq_len} is too short for {n} key-value pairs",
                hint=f"use a length of at least {self.min_length()}",
            )
        keys = rng.sample(range(*self.key_range), n)
        values = [rng.randrange(*self.value_range) for _ in range(n)]
        total = seq_len + 1
        context = 2 * n
        # The query region is split into slots of 2 (key, value). Slot gaps are drawn
        # without replacement from the power law, so no two queries collide.
        space = (total - context) // 2
        weights = [cfg.power_a * (g ** (cfg.power_a - 1)) for g in range(1, space + 1)]
        gaps = _sample_without_replacement(rng, weights, n)
        seq = [0] * total
        if cfg.random_non_queries:
            seq = [rng.randrange(1, cfg.vocab_size) for _ in range(total)]
        for i, (k, v) in enumerate(zip(keys, values)):
            seq[2 * i], seq[2 * i + 1] = k, v
        order = list(range(n))
        rng.shuffle(order)
        target = [IGNORE_INDEX] * total
        query_positions = []
        for slot, i in zip(gaps, order):
            pos = context + 2 * (slot - 1)  # the key; its value follows
            seq[pos], seq[pos + 1] = keys[i], values[i]
            target[pos + 1] = values[i]
            query_positions.append(pos)
        inputs, labels = seq[:-1], target[1:]
        meta = {"keys": keys, "values": values, "query_positions": sorted(query_positions)}
        return inputs, labels, meta

    def sample_batch(self, batch_size: int, seq_len: int, generator: Any) -> tuple[Any, Any]:
        import torch

        seeds = torch.randint(0, 2**62, (batch_size,), generator=generator).tolist()
        rows = [self.make(random.Random(s), seq_len) for s in seeds]
        inputs = torch.tensor([r[0] for r in rows], dtype=torch.long)
        labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
        return inputs, labels

    def eval_examples(self, n: int, length: int, seed: int) -> list[EvalExample]:
        out = []
        for i in range(n):
            inputs, labels, meta = self.make(random.Random(f"mqar:{seed}:{length}:{i}"), length)
            out.append(
                EvalExample(
                    input_ids=inputs,
                    labels=labels,
                    meta={**meta, "length": length, "config": asdict(self.config)},
                )
            )
        return out

    def score(self, output: str, example: EvalExample) -> float:  # pragma: no cover - unused
        raise NotImplementedError("MQAR is scored by a forward pass: see lifelong.bench.evaluate")


def _sample_without_replacement(rng: random.Random, weights: list[float], k: int) -> list[int]:
    """``k`` distinct values of 1..len(weights), each drawn with probability ∝ its weight.

    Efraimidis-Spirakis: keep the k largest ``u ** (1 / w)`` (u uniform), compared as
    ``log(u) / w`` so that tiny weights do not underflow to ties; the same
    distribution as numpy's ``choice(replace=False, p=...)``, without numpy.
    """
    keyed = [(math.log(1.0 - rng.random()) / w, g) for g, w in enumerate(weights, start=1)]
    keyed.sort(reverse=True)
    return [g for _, g in keyed[:k]]
