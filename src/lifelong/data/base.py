"""The interface every sequence task shares, and the machinery of the text tasks.

A sequence task (``SequenceTask``) is used two ways:

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

The registry that names the tasks is ``lifelong.data.registry``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lifelong.data.tokenizer import Tokenizer, load_tokenizer
from lifelong.errors import ConfigError

if TYPE_CHECKING:
    import torch

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


class SequenceTask(Protocol):
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


# --------------------------------------------------------------------------- continual-learning tasks


@dataclass
class Query:
    """One question of a continual-learning task: the prompt a learner answers (it ends
    with the cue, e.g. ``English:``), the reference, and a generation budget."""

    prompt: str
    reference: str
    max_tokens: int = 16
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContinualTask:
    """One task of a continual-learning stream (``lifelong.data.classinc``,
    ``lifelong.data.novel_lang``).

    ``material`` is what a learner is given to learn from (examples, a dictionary,
    grammar notes), written with the same lines the queries use; ``practice`` are
    answered queries of the material, for learners that practise; ``queries`` are
    the test. ``score(outputs, references)`` scores a list of outputs together
    (accuracy in [0, 1], or corpus chrF in [0, 100]); ``metric`` names it.
    """

    name: str
    material: str
    queries: list[Query]
    practice: list[Query]
    metric: str
    score: Any  # Callable[[list[str], list[str]], float]
    meta: dict[str, Any] = field(default_factory=dict)
