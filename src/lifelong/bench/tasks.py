"""The benchmark tasks behind one interface, and the registry that names them.

A task is used two ways:

- training: ``task.sample_batch(batch_size, seq_len, generator)`` returns
  ``(input_ids, labels)``, both ``LongTensor[B, T]`` with ``T == seq_len``. Labels are
  already shifted: ``labels[:, t]`` is the target of the logits at position ``t``
  (the token at ``t + 1``), and ``-100`` where nothing is scored. The loss is
  ``cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)``.
- evaluation: ``task.eval_examples(n, length, seed)`` returns ``EvalExample``s.
  A text task's example is a prompt to continue by greedy generation, scored by
  ``task.score(output_text, example)`` against reference strings; MQAR's example
  is a whole sequence with labels, scored by one forward pass (accuracy over the
  query positions).

``length`` at evaluation and ``seq_len`` in training measure the same thing: a
text example at length L is a prompt that, with its answer and eos, fills L + 1
tokens, exactly like a training sequence of ``seq_len`` L. So "2x the training
length" means the same shape, twice as long.

Names: ``mqar``; ``s_niah_1``, ``s_niah_2``, ``s_niah_3``, ``mk_niah``, ``mv_niah``,
``mq_niah``, ``vt``; ``babilong_qa1`` … ``babilong_qa5``. Suites (for
``lifelong bench run --suite``) are a task name or one of ``SUITES``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lifelong.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from lifelong.bench.tokenizer import Tokenizer

IGNORE_INDEX = -100


@dataclass
class EvalExample:
    """One evaluation item; ``labels`` set means "score by forward pass", else "generate"."""

    input_ids: list[int]
    references: list[str] = field(default_factory=list)
    labels: list[int] | None = None
    max_new_tokens: int = 0
    question: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    name: str
    vocab_size: int
    tokenizer: Tokenizer | None

    def sample_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval_examples(self, n: int, length: int, seed: int) -> list[EvalExample]: ...

    def score(self, output: str, example: EvalExample) -> float: ...


# --------------------------------------------------------------------------- text tasks


@dataclass
class TextExample:
    """A rendered text example: prompt pieces (joined = the prompt text) and the answer."""

    pieces: list[str]
    answer: str  # the text the model should produce after the prompt (before eos)
    references: list[str]
    question: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class TextTask:
    """Shared machinery of the text tasks: token budgets, batches, prompts, scoring.

    Subclasses implement ``make(rng, budget, depth) -> TextExample`` where ``budget`` is the
    number of tokens the prompt and the answer may use together (bos and eos excluded),
    and may override ``score``.
    """

    name: str = "text"

    def __init__(self, tokenizer: str | Tokenizer | None = None) -> None:
        from lifelong.bench.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        self._ids_cache: dict[str, list[int]] = {}

    # -- encoding

    def ids(self, piece: str) -> list[int]:
        """Token ids of one piece, cached (haystack sentences repeat a lot)."""
        cached = self._ids_cache.get(piece)
        if cached is None:
            cached = self.tokenizer.encode(piece)
            if len(self._ids_cache) < 200_000:
                self._ids_cache[piece] = cached
        return cached

    def count(self, piece: str) -> int:
        return len(self.ids(piece))

    def encode_pieces(self, pieces: list[str]) -> list[int]:
        out: list[int] = []
        for p in pieces:
            out.extend(self.ids(p))
        return out

    # -- the subclass's part

    def make(self, rng: random.Random, budget: int, depth: float | None = None) -> TextExample:
        """An example whose prompt + answer use at most ``budget`` tokens.

        ``depth`` in [0, 1] places the (first) needle; None draws it from ``rng``.
        """
        raise NotImplementedError

    # -- training

    def sample_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        tok = self.tokenizer
        inputs = torch.full((batch_size, seq_len), tok.pad_id, dtype=torch.long)
        labels = torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long)
        seeds = torch.randint(0, 2**62, (batch_size,), generator=generator).tolist()
        for b, seed in enumerate(seeds):
            ex = self.make(random.Random(seed), seq_len - 1)
            prompt = [tok.bos_id] + self.encode_pieces(ex.pieces)
            answer = self.ids(ex.answer) + [tok.eos_id]
            seq = prompt + answer
            if len(seq) > seq_len + 1:
                raise ConfigError(
                    f"{self.name}: an example of {len(seq)} tokens does not fit seq_len {seq_len}",
                    hint=f"use a sequence length of at least {len(seq)}",
                )
            # Padding goes after eos: a causal model's earlier predictions never see it.
            n = len(seq) - 1
            inputs[b, :n] = torch.tensor(seq[:-1])
            target = torch.tensor(seq[1:])
            scored = torch.arange(n) >= len(prompt) - 1  # positions that predict answer/eos
            labels[b, :n] = torch.where(scored, target, torch.full_like(target, IGNORE_INDEX))
        return inputs, labels

    # -- evaluation

    def eval_examples(self, n: int, length: int, seed: int) -> list[EvalExample]:
        out = []
        for i in range(n):
            rng = random.Random(f"{self.name}:{seed}:{length}:{i}")
            # Spread needle depths evenly over the examples (the generators read it).
            depth = i / (n - 1) if n > 1 else 0.5
            ex = self.make(rng, length - 1, depth=depth)
            answer_ids = self.ids(ex.answer)
            out.append(
                EvalExample(
                    input_ids=[self.tokenizer.bos_id] + self.encode_pieces(ex.pieces),
                    references=list(ex.references),
                    max_new_tokens=len(answer_ids) + 8,
                    question=ex.question,
                    meta={**ex.meta, "answer": ex.answer, "length": length},
                )
            )
        return out

    def score(self, output: str, example: EvalExample) -> float:
        """RULER's string_match_all: the fraction of references found in the output."""
        text = output.lower()
        refs = example.references
        return sum(r.lower() in text for r in refs) / len(refs) if refs else 0.0


# --------------------------------------------------------------------------- registry

SUITES: dict[str, tuple[str, ...]] = {
    "mqar": ("mqar",),
    "s_niah": ("s_niah_1", "s_niah_2", "s_niah_3"),
    "niah": ("s_niah_1", "s_niah_2", "s_niah_3", "mk_niah", "mv_niah", "mq_niah", "vt"),
    "ruler": ("s_niah_1", "s_niah_2", "s_niah_3", "mk_niah", "mv_niah", "mq_niah", "vt"),
    "babilong": tuple(f"babilong_qa{i}" for i in range(1, 6)),
}


def task_names() -> list[str]:
    from lifelong.bench import babilong, mqar, niah

    return list(mqar.TASKS) + list(niah.TASKS) + list(babilong.TASKS)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (see the module docstring), built with ``options``.

    Text tasks take ``tokenizer=`` (a spec, see ``lifelong.bench.tokenizer``); every task
    takes the options of its config dataclass (e.g. ``mqar``: ``vocab_size``,
    ``num_kv_pairs``).
    """
    from lifelong.bench import babilong, mqar, niah

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
