"""``lifelong bench llm``: load time, prefill and decode throughput of a backend.

Measured through the public protocol, so every backend is timed the same way:
prefill = a long prompt with one token generated; decode = the extra time of
N generated tokens over one, per token. Each prompt starts differently so no
backend can serve it from a prompt cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from lifelong.llm.base import LLM

_TEXT = (
    "The history of the lighthouse keepers on the northern coast is a story of patience. "
    "Every evening the lamps were trimmed, the lenses polished and the log written by hand. "
    "Storms came in from the west and the keepers counted the ships that passed in the dark. "
)


@dataclass
class LLMBenchResult:
    name: str
    load_s: float
    prefill_tok_s: float
    decode_tok_s: float
    prompt_tokens: int
    decode_tokens: int


def _prompt(tag: int, target_tokens: int, count: Callable[[str], int]) -> str:
    text = f"Record {tag}. "
    while count(text) < target_tokens:
        text += _TEXT
    return text


def bench_llm(open_model: Callable[[], LLM], *, prompt_tokens: int = 512, decode_tokens: int = 128,
              repeats: int = 3) -> LLMBenchResult:
    t0 = time.perf_counter()
    llm = open_model()
    load_s = getattr(llm, "load_s", None) or (time.perf_counter() - t0)
    try:
        llm.complete("Warm up.", max_tokens=2, seed=0)
        prefill, decode = [], []
        n_prompt = n_decode = 0
        for r in range(repeats):
            p = _prompt(2 * r, prompt_tokens, llm.count_tokens)
            one = llm.complete(p, max_tokens=1, seed=0)
            prefill.append(one.prompt_tokens / one.latency_s)
            n_prompt = one.prompt_tokens
            q = _prompt(2 * r + 1, prompt_tokens, llm.count_tokens)
            base = llm.complete(q, max_tokens=1, seed=0)
            q2 = _prompt(2 * r + 1001, prompt_tokens, llm.count_tokens)
            many = llm.complete(q2, max_tokens=decode_tokens, seed=0)
            extra = many.completion_tokens - 1
            if extra > 0:
                decode.append(extra / max(1e-9, many.latency_s - base.latency_s))
                n_decode = many.completion_tokens
        return LLMBenchResult(
            name=llm.name, load_s=load_s, prefill_tok_s=statistics.median(prefill),
            decode_tok_s=statistics.median(decode) if decode else float("nan"),
            prompt_tokens=n_prompt, decode_tokens=n_decode,
        )
    finally:
        llm.close()


class LlamaCppPythonLLM:
    """The same GGUF run by ``llama-cpp-python``: only for the side-by-side benchmark."""

    def __init__(self, model_path: str, context_window: int = 8192) -> None:
        from lifelong.errors import ModelError

        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError("llama-cpp-python is not installed",
                             hint="pip install llama-cpp-python (builds llama.cpp from source, ~10 min)") from exc
        import os

        t0 = time.perf_counter()
        self._llm = Llama(model_path=model_path, n_ctx=context_window, n_threads=os.cpu_count(),
                          verbose=False, seed=0)
        self.load_s = time.perf_counter() - t0
        self.name = "llama-cpp-python"
        self.context_window = context_window

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def complete(self, prompt: str, *, max_tokens: int = 256, seed: int | None = None, **_: object):
        from lifelong.llm.base import Completion

        self._llm.reset()  # no prompt cache between calls
        t0 = time.perf_counter()
        out = self._llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=seed)
        usage = out["usage"]
        return Completion(text=out["choices"][0]["text"], prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"],
                          finish_reason=out["choices"][0]["finish_reason"] or "stop",
                          latency_s=time.perf_counter() - t0)

    def close(self) -> None:
        self._llm.close()
