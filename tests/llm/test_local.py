"""The embedded model really runs: llama.cpp in-process on Gemma 3 270M."""

from __future__ import annotations

import pytest

from lifelong.errors import ConfigError, ContextOverflowError, ModelError, ValidationError
from lifelong.llm import LLM, Completion, load_llm


def test_generates_real_text(local_llm):
    c = local_llm.complete("The capital of France is", max_tokens=8, seed=1)
    assert isinstance(c, Completion)
    assert "paris" in c.text.lower() or "france" in c.text.lower()
    assert c.completion_tokens == 8 and c.finish_reason == "length"
    assert isinstance(local_llm, LLM)


def test_prompt_tokens_come_from_the_model_tokenizer(local_llm):
    prompt = "Lighthouse keepers trimmed the lamps every evening."
    c = local_llm.complete(prompt, max_tokens=1, seed=0)
    # The server's usage number counts BOS; count_tokens counts the text alone.
    assert c.prompt_tokens == local_llm.count_tokens(prompt) + 1
    assert local_llm.count_tokens("") == 0
    assert local_llm.count_tokens("hello hello hello") > local_llm.count_tokens("hello")


def test_deterministic_with_temperature_zero_and_seed(local_llm):
    a = local_llm.complete("Once upon a time, in a small village,", max_tokens=24, seed=7)
    local_llm.complete("Something else entirely to move the cache.", max_tokens=4, seed=1)
    b = local_llm.complete("Once upon a time, in a small village,", max_tokens=24, seed=7)
    assert a.text == b.text and a.text.strip()


def test_sampling_with_temperature_follows_the_seed(local_llm):
    a = local_llm.complete("My favourite colour is", max_tokens=16, temperature=1.0, seed=3)
    b = local_llm.complete("My favourite colour is", max_tokens=16, temperature=1.0, seed=3)
    assert a.text == b.text


def test_stop_strings_end_the_completion(local_llm):
    c = local_llm.complete("1, 2, 3, 4, 5, 6,", max_tokens=30, stop=[" 9"], seed=0)
    assert " 9" not in c.text and c.finish_reason == "stop"
    assert "7" in c.text


def test_chat_messages(local_llm):
    c = local_llm.complete([{"role": "user", "content": "Name a colour."}], max_tokens=6, seed=0)
    assert c.prompt_tokens > 3 and c.completion_tokens >= 1


def test_prompt_longer_than_context_window_is_refused(local_llm):
    long = "word " * (local_llm.context_window + 10)
    with pytest.raises(ContextOverflowError) as exc:
        local_llm.complete(long, max_tokens=4)
    assert "context window" in str(exc.value)


def test_malformed_messages(local_llm):
    with pytest.raises(ValidationError):
        local_llm.complete([], max_tokens=2)
    with pytest.raises(ValidationError):
        local_llm.complete([{"content": "no role"}], max_tokens=2)


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("bogus", ConfigError, "unknown model spec"),
        ("local?nonsense=1", ConfigError, "unknown option"),
        ("local?ctx=big", ConfigError, "is not a whole number"),
        ("llamacpp:", ConfigError, "needs a path"),
        ("llamacpp:/nonexistent/model.gguf", ModelError, "not found"),
        ("openai:http://127.0.0.1:9/v1", ConfigError, "model name"),
        ("hf:", ConfigError, "needs a path"),
    ],
)
def test_bad_specs_say_what_to_do(spec, error, words):
    with pytest.raises(error) as exc:
        load_llm(spec)
    assert words in str(exc.value)
    assert exc.value.hint


def test_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelError) as exc:
        load_llm(f"llamacpp:{bad}")
    assert "could not load" in str(exc.value)
