"""RULER-style needle-in-a-haystack tasks, generated offline from a seed.

Following RULER (Hsieh et al., 2024):

- ``s_niah_1``: one needle in repeated noise ("The grass is green. The sky is blue. ...");
  word keys ("adjective-noun" from the wonderwords lists), 7-digit number values.
- ``s_niah_2``: the same needle in an essay haystack.
- ``s_niah_3``: essay haystack, UUID values.
- ``mk_niah``: four needles with different keys; one is asked for (the others distract).
- ``mv_niah``: four values for the same key; all four are asked for.
- ``mq_niah``: four keys; all four are asked for in one question.
- ``vt``: variable tracking: a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... in noise;
  the answer is every variable that holds the value.

The needle is "One of the special magic {numbers} for {key} is: {value}." Needles sit
between haystack sentences, at depths spread over the context (the evaluation spreads
the queried needle's depth evenly from 0 to 1 across its examples). The score is the
fraction of reference strings found in the output (RULER's string_match_all).
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from lifelong.data import haystack
from lifelong.data.base import TextExample, TextTask
from lifelong.data.templates import (
    ANSWER_PREFIX,
    HEADER,
    NEEDLE,
    QUESTION,
    VT_ANSWER_PREFIX,
    VT_HEADER,
    VT_QUESTION,
)
from lifelong.errors import ConfigError


@dataclass
class NIAHConfig:
    haystack: str = "essay"  # "noise" | "essay" | "book"
    value_type: str = "numbers"  # "numbers" (7 digits) | "uuids"
    num_keys: int = 1  # needles with distinct keys
    num_values: int = 1  # values per key
    num_queries: int = 1  # keys asked about (the first num_queries of the num_keys)
    tokenizer: str | None = None


@dataclass
class VTConfig:
    haystack: str = "noise"
    num_chains: int = 1  # chains with other values distract
    num_hops: int = 4  # a chain of num_hops + 1 variables
    tokenizer: str | None = None


TASKS: dict[str, dict[str, Any]] = {
    "s_niah_1": {"haystack": "noise"},
    "s_niah_2": {"haystack": "essay"},
    "s_niah_3": {"haystack": "essay", "value_type": "uuids"},
    "mk_niah": {"haystack": "essay", "num_keys": 4},
    "mv_niah": {"haystack": "essay", "num_values": 4},
    "mq_niah": {"haystack": "essay", "num_keys": 4, "num_queries": 4},
    "vt": {},
}


def build(name: str, **options: Any) -> TextTask:
    opts = {**TASKS[name], **options}
    try:
        if name == "vt":
            return VariableTracking(name, VTConfig(**opts))
        return NeedleTask(name, NIAHConfig(**opts))
    except TypeError as exc:
        raise ConfigError(f"bad option for task {name!r}: {exc}") from exc


# --------------------------------------------------------------------------- haystack assembly


def _source(name: str) -> tuple[str, ...]:
    if name == "noise":
        return haystack.NOISE_SENTENCES
    if name == "essay":
        return haystack.essay_sentences()
    if name == "book":
        return haystack.book_sentences()
    raise ConfigError(f"unknown haystack {name!r}", hint="use 'noise', 'essay' or 'book'")


def assemble(
    task: TextTask,
    rng: random.Random,
    budget: int,
    source: str | tuple[str, ...],
    header: str,
    needles: list[str],
    first_depth: float | None,
    tail: list[str],
    answer: str,
    in_order: bool = False,
) -> tuple[list[str], list[int]]:
    """Pieces of ``header + haystack with needles + tail`` so that pieces + answer fit ``budget``.

    ``source`` names a haystack ("noise", "essay", "book") or gives its sentences.
    Returns the pieces and the index of each needle in the haystack (in sentences).
    Needle 0 goes at ``first_depth`` (if given), the others at random depths; with
    ``in_order`` the needles keep their order (a chain of assignments must).
    """
    sentences = _source(source) if isinstance(source, str) else source
    fixed = task.count(header) + sum(task.count(p) for p in tail) + task.count(answer)
    fixed += sum(task.count(" " + n) for n in needles)
    room = budget - fixed
    if room < 0:
        raise ConfigError(
            f"{task.name}: length {budget + 1} is shorter than the prompt without haystack "
            f"({fixed + 1} tokens)",
            hint=f"use a length of at least {fixed + 1 + 64}",
        )
    # Contiguous text from a random start (noise: from its beginning). Once a sentence
    # does not fit, later ones that still do are taken, so the prompt fills the budget
    # closely; the scan stops after 512 misses or when fewer than 4 tokens are left.
    start = 0 if source == "noise" or not sentences else rng.randrange(len(sentences))
    chosen: list[str] = []
    used, i, misses = 0, start, 0
    while sentences and misses < 512 and room - used >= 4:
        s = sentences[i % len(sentences)]
        i += 1
        c = task.count(" " + s)
        if used + c <= room:
            chosen.append(s)
            used += c
        else:
            misses += 1
    m = len(chosen)
    slots = [rng.randint(0, m) for _ in needles]
    if first_depth is not None and needles:
        slots[0] = round(first_depth * m)
    if in_order:
        slots.sort()
    order = sorted(range(len(needles)), key=lambda k: (slots[k], k if in_order else rng.random()))
    items: list[str] = []
    positions = [0] * len(needles)
    cursor = 0
    for k in order:
        items.extend(chosen[cursor : slots[k]])
        cursor = max(cursor, slots[k])
        positions[k] = len(items)
        items.append(needles[k])
    items.extend(chosen[cursor:])
    # The first item follows the header's newline, so it takes no leading space.
    pieces = [header] + [it if j == 0 else " " + it for j, it in enumerate(items)] + tail
    # " X" and "X" may differ by a token or two: if the first item went over, drop the
    # smallest haystack sentence that brings the prompt back within the budget.
    while (excess := sum(task.count(p) for p in pieces) + task.count(answer) - budget) > 0:
        droppable = [
            j for j in range(1, len(pieces) - len(tail)) if pieces[j].strip() not in needles
        ]
        if not droppable:
            raise ConfigError(
                f"{task.name}: length {budget + 1} cannot hold the prompt",
                hint="use a longer length",
            )
        enough = [j for j in droppable if task.count(pieces[j]) >= excess]
        pieces.pop(min(enough, key=lambda j: task.count(pieces[j])) if enough else droppable[-1])
    # Where each needle ended up, in haystack items (drops may have shifted them).
    needle_order = iter(order)
    for idx, piece in enumerate(pieces[1 : len(pieces) - len(tail)]):
        if piece.strip() in needles:
            positions[next(needle_order)] = idx
    return pieces, positions


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _join_keys(keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    return ", ".join(keys[:-1]) + ", and " + keys[-1]


# --------------------------------------------------------------------------- tasks


class NeedleTask(TextTask):
    """S-NIAH, MK-NIAH, MV-NIAH, MQ-NIAH: word keys, number or UUID values."""

    def __init__(self, name: str, config: NIAHConfig) -> None:
        super().__init__(config.tokenizer)
        if config.value_type not in ("numbers", "uuids"):
            raise ConfigError(f"unknown value_type {config.value_type!r}", hint="numbers or uuids")
        if not 1 <= config.num_queries <= config.num_keys or config.num_values < 1:
            raise ConfigError("need 1 <= num_queries <= num_keys and num_values >= 1")
        _source(config.haystack)
        self.name = name
        self.config = config

    def make(self, rng: random.Random, budget: int, depth: float | None = None) -> TextExample:
        cfg = self.config
        kind = cfg.value_type
        keys: list[str] = []
        while len(keys) < cfg.num_keys:
            k = haystack.word_key(rng)
            if k not in keys:
                keys.append(k)
        draw = _number if kind == "numbers" else _uuid
        values: dict[str, list[str]] = {}
        seen: set[str] = set()
        for k in keys:
            values[k] = []
            while len(values[k]) < cfg.num_values:
                v = draw(rng)
                if v not in seen:
                    seen.add(v)
                    values[k].append(v)
        queries = keys[: cfg.num_queries]
        needles = [NEEDLE.format(kind=kind, key=k, value=v) for k in keys for v in values[k]]
        query = _join_keys(queries)
        references = [v for k in queries for v in values[k]]
        answer = " " + ", ".join(references) + "."
        tail = [
            QUESTION.format(kind=kind, query=query),
            ANSWER_PREFIX.format(kind=kind, query=query),
        ]
        pieces, positions = assemble(
            self, rng, budget, cfg.haystack, HEADER.format(kind=kind), needles, depth, tail, answer
        )
        n_items = len(pieces) - 1 - len(tail)
        return TextExample(
            pieces=pieces,
            answer=answer,
            references=references,
            question=tail[0].strip(),
            meta={
                "keys": keys,
                "queries": queries,
                "values": values,
                "depth": positions[0] / max(1, n_items - 1) if needles else 0.0,
                "config": asdict(cfg),
            },
        )


class VariableTracking(TextTask):
    """RULER's VT: find every variable a chain of assignments gives the value to."""

    def __init__(self, name: str, config: VTConfig) -> None:
        super().__init__(config.tokenizer)
        if config.num_chains < 1 or config.num_hops < 1:
            raise ConfigError("vt needs num_chains >= 1 and num_hops >= 1")
        _source(config.haystack)
        self.name = name
        self.config = config

    def make(self, rng: random.Random, budget: int, depth: float | None = None) -> TextExample:
        cfg = self.config
        names: list[str] = []
        while len(names) < cfg.num_chains * (cfg.num_hops + 1):
            v = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
            if v not in names and v != "VAR":
                names.append(v)
        chains, values = [], []
        for c in range(cfg.num_chains):
            chain = names[c * (cfg.num_hops + 1) : (c + 1) * (cfg.num_hops + 1)]
            value = str(rng.randint(10_000, 99_999))
            while value in values:
                value = str(rng.randint(10_000, 99_999))
            chains.append(chain)
            values.append(value)
        # Statements of all chains, each chain in order, chains interleaved at random.
        stmts: list[tuple[int, str]] = []
        cursors = [0] * cfg.num_chains
        while any(cur <= cfg.num_hops for cur in cursors):
            c = rng.choice([c for c in range(cfg.num_chains) if cursors[c] <= cfg.num_hops])
            j = cursors[c]
            rhs = values[c] if j == 0 else f"VAR {chains[c][j - 1]}"
            stmts.append((c, f"VAR {chains[c][j]} = {rhs}."))
            cursors[c] += 1
        value = values[0]
        answer = " " + " ".join(chains[0]) + "."
        tail = [
            VT_QUESTION.format(value=value),
            VT_ANSWER_PREFIX.format(n=len(chains[0]), value=value),
        ]
        pieces, positions = assemble(
            self,
            rng,
            budget,
            cfg.haystack,
            VT_HEADER,
            [s for _, s in stmts],
            depth,
            tail,
            answer,
            in_order=True,
        )
        return TextExample(
            pieces=pieces,
            answer=answer,
            references=list(chains[0]),
            question=tail[0].strip(),
            meta={"chains": chains, "values": values, "config": asdict(cfg)},
        )
