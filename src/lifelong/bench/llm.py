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


def bench_llms(openers: list[Callable[[], LLM]], *, prompt_tokens: int = 512, decode_tokens: int = 128,
               repeats: int = 3, progress: Callable[[str], None] | None = None) -> list[LLMBenchResult]:
    """Measure several backends in one run, interleaving their repeats so that
    a change in the machine's load falls on all of them alike. ``progress`` is
    told each step ("loading model 1 of 2", "repeat 2 of 3: prefill", …)."""
    say = progress or (lambda _what: None)
    models, loads = [], []
    try:
        for k, open_model in enumerate(openers, 1):
            say(f"loading model {k} of {len(openers)}")
            t0 = time.perf_counter()
            llm = open_model()
            loads.append(getattr(llm, "load_s", None) or (time.perf_counter() - t0))
            models.append(llm)
            llm.complete("Warm up.", max_tokens=2, seed=0)
        prefill: list[list[float]] = [[] for _ in models]
        decode: list[list[float]] = [[] for _ in models]
        n_prompt = [0] * len(models)
        n_decode = [0] * len(models)
        for r in range(repeats):
            for i, llm in enumerate(models):
                say(f"repeat {r + 1} of {repeats}, {llm.name}: prefill {prompt_tokens} tokens, "
                    f"decode {decode_tokens}")
                p = _prompt(3 * r, prompt_tokens, llm.count_tokens)
                one = llm.complete(p, max_tokens=1, seed=0)
                prefill[i].append(one.prompt_tokens / one.latency_s)
                n_prompt[i] = one.prompt_tokens
                base = llm.complete(_prompt(3 * r + 1, prompt_tokens, llm.count_tokens), max_tokens=1, seed=0)
                many = llm.complete(_prompt(3 * r + 2, prompt_tokens, llm.count_tokens),
                                    max_tokens=decode_tokens, seed=0)
                if many.completion_tokens > 1:
                    decode[i].append((many.completion_tokens - 1) / max(1e-9, many.latency_s - base.latency_s))
                    n_decode[i] = many.completion_tokens
        return [LLMBenchResult(name=m.name, load_s=loads[i], prefill_tok_s=statistics.median(prefill[i]),
                               decode_tok_s=statistics.median(decode[i]) if decode[i] else float("nan"),
                               prompt_tokens=n_prompt[i], decode_tokens=n_decode[i])
                for i, m in enumerate(models)]
    finally:
        for m in models:
            m.close()


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
