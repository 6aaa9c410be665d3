"""Text tokenization for the text benchmarks (NIAH, BABILong): byte-level or a small BPE.

One ``Tokenizer`` class with two back ends, named by a spec string so that a
checkpoint can say which tokenizer it was trained with:

- ``byte``: the 256 byte values, then the special tokens. Nothing to train, never
  out of vocabulary, but about 4-5 tokens per English word.
- ``bpe:VOCAB`` (e.g. ``bpe:4096``): byte-level BPE trained with ``tokenizers`` on
  the bundled text (the essays and the book text the haystacks are cut from, plus
  the task templates). Trained once, deterministically, and cached under
  ``lifelong.paths.cache_dir()``. Digits are split one per token so a 7-digit
  magic number is always 7 tokens, whatever digits it has.
- a path to a ``tokenizer.json``, or that JSON text itself (what ``to_json()``
  returns): a checkpoint can carry its tokenizer whole.

Every back end has the same four special tokens: pad, bos, eos, sep.

The task generators build a prompt from pieces (prefix, sentences, needles,
question) and concatenate the pieces' ids. That is exact, not an approximation,
because every piece after the first starts at a word boundary (a space or a
newline) and neither back end merges across one: ``encode("".join(pieces)) ==
sum(encode(p) for p in pieces)`` (the tests check it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lifelong.atomic import atomic_write_text
from lifelong.errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>")
DEFAULT_SPEC = "bpe:4096"


class Tokenizer:
    """encode / decode / vocab_size, and ``pad_id``, ``bos_id``, ``eos_id``, ``sep_id``."""

    def __init__(self, spec: str, backend: object | None) -> None:
        # backend None means byte-level; otherwise a ``tokenizers.Tokenizer``.
        self.spec = spec
        self._bpe = backend
        if backend is None:
            self.vocab_size = 256 + len(SPECIALS)
            self.pad_id, self.bos_id, self.eos_id, self.sep_id = range(256, 256 + len(SPECIALS))
        else:
            self.vocab_size = backend.get_vocab_size()
            ids = [backend.token_to_id(s) for s in SPECIALS]
            if any(i is None for i in ids):
                raise ConfigError(
                    f"tokenizer {spec!r} lacks the special tokens {', '.join(SPECIALS)}",
                    hint="use a tokenizer made by lifelong (spec 'byte' or 'bpe:VOCAB')",
                )
            self.pad_id, self.bos_id, self.eos_id, self.sep_id = ids
            # Text that spells "<eos>" is text: only the task code places special tokens.
            backend.encode_special_tokens = True
        self.special_ids = frozenset((self.pad_id, self.bos_id, self.eos_id, self.sep_id))

    def encode(self, text: str) -> list[int]:
        if self._bpe is None:
            return list(text.encode("utf-8"))
        return self._bpe.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""
        ids = [int(i) for i in ids if int(i) not in self.special_ids]
        if self._bpe is None:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._bpe.decode(ids, skip_special_tokens=True)

    def to_json(self) -> str:
        """The whole tokenizer as text; ``load_tokenizer(tok.to_json())`` rebuilds it."""
        if self._bpe is None:
            return json.dumps({"lifelong_tokenizer": "byte"})
        return self._bpe.to_str()

    def __repr__(self) -> str:
        return f"Tokenizer({self.spec!r}, vocab_size={self.vocab_size})"


def load_tokenizer(spec: str | Tokenizer | None = None) -> Tokenizer:
    """The tokenizer a spec names: ``byte``, ``bpe:VOCAB``, a tokenizer.json path, or its JSON."""
    if isinstance(spec, Tokenizer):
        return spec
    spec = (spec or DEFAULT_SPEC).strip()
    if spec == "byte":
        return Tokenizer("byte", None)
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec.split(":", 1)[1])
        except ValueError:
            vocab = 0
        if vocab < 300:
            raise ConfigError(
                f"bad tokenizer spec {spec!r}", hint="give a vocabulary of at least 300: 'bpe:4096'"
            )
        return Tokenizer(spec, _trained_bpe(BPEConfig(vocab_size=vocab)))
    from tokenizers import Tokenizer as HFTokenizer

    if spec.startswith("{"):
        if json.loads(spec).get("lifelong_tokenizer") == "byte":
            return Tokenizer("byte", None)
        return Tokenizer(spec, HFTokenizer.from_str(spec))
    path = Path(spec).expanduser()
    if path.is_file():
        return Tokenizer(str(path), HFTokenizer.from_file(str(path)))
    raise ConfigError(
        f"unknown tokenizer {spec!r}",
        hint="use 'byte', 'bpe:4096', or the path of a tokenizer.json",
    )


# --------------------------------------------------------------------------- BPE training


@dataclass
class BPEConfig:
    vocab_size: int = 4096
    # Book text is large; a few MB is plenty for a 4k vocabulary and keeps training ~seconds.
    max_corpus_chars: int = 4_000_000
    min_frequency: int = 2


def _trained_bpe(config: BPEConfig):  # -> tokenizers.Tokenizer
    """Train (or load from the cache) the BPE for ``config``; deterministic for a corpus."""
    from tokenizers import Tokenizer as HFTokenizer

    from lifelong.paths import cache_dir

    corpus = _bpe_corpus(config.max_corpus_chars)
    digest = hashlib.sha256(
        json.dumps([config.vocab_size, config.min_frequency, SPECIALS]).encode()
        + b"\0".join(t.encode() for t in corpus)
    ).hexdigest()[:16]
    path = cache_dir() / "tokenizers" / f"bpe-{config.vocab_size}-{digest}.json"
    if path.is_file():
        return HFTokenizer.from_file(str(path))
    tok = train_bpe(corpus, config.vocab_size, config.min_frequency)
    atomic_write_text(path, tok.to_str())
    return tok


def train_bpe(texts: list[str], vocab_size: int, min_frequency: int = 2):  # -> tokenizers.Tokenizer
    """A byte-level BPE with one token per digit and the lifelong special tokens first."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def _bpe_corpus(max_chars: int) -> list[str]:
    """The bundled text, in a fixed order: essays, book sentences, the task templates."""
    from lifelong.data import haystack, templates

    texts = [" ".join(haystack.essay_sentences())]
    texts.append(" ".join(haystack.book_sentences())[: max(0, max_chars - len(texts[0]))])
    texts.append(templates.template_text())
    return texts
