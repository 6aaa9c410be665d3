"""The transformers backend: the embedded GGUF dequantized once, cached as safetensors."""

from __future__ import annotations

import pytest

from lifelong.errors import ModelError
from lifelong.llm import load_llm


@pytest.mark.slow
def test_hf_backend_converts_once_and_agrees_with_llama_cpp(tmp_path, monkeypatch, local_llm):
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path))
    llm = load_llm("hf:local")
    converted = list((tmp_path / "hf").glob("*/model.safetensors"))
    assert len(converted) == 1 and not list((tmp_path / "hf").glob(".*.tmp"))
    stamp = converted[0].stat().st_mtime_ns

    prompt = "The capital of France is"
    c = llm.complete(prompt, max_tokens=8, seed=0)
    assert c.completion_tokens == 8 and c.prompt_tokens == local_llm.count_tokens(prompt) + 1
    # Same weights, greedy decoding: transformers and llama.cpp continue alike.
    assert c.text == local_llm.complete(prompt, max_tokens=8, seed=0).text
    text = "Lighthouse keepers trimmed the lamps every evening."
    assert llm.count_tokens(text) == local_llm.count_tokens(text)
    stopped = llm.complete("1, 2, 3, 4, 5,", max_tokens=12, stop=[" 8"], seed=0)
    assert " 8" not in stopped.text and stopped.finish_reason == "stop"
    llm.close()

    again = load_llm("hf:local")  # from the cache: no second conversion
    assert converted[0].stat().st_mtime_ns == stamp
    assert again.complete(prompt, max_tokens=8, seed=0).text == c.text


def test_hf_backend_missing_model(tmp_path):
    with pytest.raises(ModelError) as exc:
        load_llm(f"hf:{tmp_path}/nothing-here")
    assert "not found" in str(exc.value)
