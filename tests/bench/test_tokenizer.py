"""Tokenizers: round trips, special tokens, determinism, one token per digit."""

from __future__ import annotations

import random

import pytest

from lifelong.data.tokenizer import load_tokenizer, train_bpe
from lifelong.errors import ConfigError


def _random_text(rng: random.Random) -> str:
    words = ["the", "grass", "is", "green", "Mary", "moved", "to", "kitchen", "é", "—", "42"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + rng.choice(
        [".", "?", "\n"]
    )


@pytest.mark.parametrize("spec", ["byte", "bpe:4096"])
def test_round_trip_and_specials(spec):
    tok = load_tokenizer(spec)
    rng = random.Random()
    for _ in range(50):
        text = _random_text(rng)
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    specials = [tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id]
    assert len(set(specials)) == 4 and all(0 <= i < tok.vocab_size for i in specials)
    # Specials never come out of plain text and are dropped on decode.
    assert not set(tok.encode("<pad><bos><eos><sep> hello")) & set(specials) or spec == "byte"
    assert tok.decode([tok.bos_id] + tok.encode("hi") + [tok.eos_id]) == "hi"


def test_bpe_splits_digits_one_per_token():
    tok = load_tokenizer("bpe:4096")
    for number in ("1234567", "9081726", "0000000"):
        ids = tok.encode(" is: " + number + ".")
        digit_ids = [i for i in ids if tok.decode([i]).strip().isdigit()]
        assert len(digit_ids) == 7
        assert [tok.decode([i]) for i in digit_ids] == list(number)


def test_bpe_is_much_shorter_than_bytes_on_prose():
    text = "It's the same process that cures diseases: technological progress." * 20
    assert len(load_tokenizer("bpe:4096").encode(text)) * 3 < len(
        load_tokenizer("byte").encode(text)
    )


def test_spec_json_round_trip():
    for spec in ("byte", "bpe:4096"):
        tok = load_tokenizer(spec)
        again = load_tokenizer(tok.to_json())
        text = "One of the special magic numbers for calm-otter is: 7301942."
        assert again.encode(text) == tok.encode(text)
        assert again.vocab_size == tok.vocab_size and again.eos_id == tok.eos_id


def test_training_is_deterministic(tmp_path):
    corpus = [" ".join(f"word{i % 37} thing{i % 11}." for i in range(3000))]
    a, b = train_bpe(corpus, 400), train_bpe(corpus, 400)
    assert a.to_str() == b.to_str()
    path = tmp_path / "tok.json"
    path.write_text(a.to_str())
    tok = load_tokenizer(str(path))
    assert tok.vocab_size == a.get_vocab_size()
    assert tok.decode(tok.encode("word3 thing4.")) == "word3 thing4."


@pytest.mark.parametrize("spec", ["bpe:12", "bpe:x", "nonsense", "/no/such/tokenizer.json"])
def test_bad_specs_say_what_to_do(spec):
    with pytest.raises(ConfigError) as err:
        load_tokenizer(spec)
    assert err.value.hint
