"""Embedded backend: llama.cpp in-process, through ``xllamacpp``.

xllamacpp ships prebuilt wheels of llama.cpp's own server code (no 10-minute
compile), so this backend runs exactly what ``llama-server`` runs. Completions
go through the in-process handlers (no HTTP); the server also listens on a
loopback port, which we use for ``/tokenize`` and which ``serve()`` exposes as
an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lifelong.errors import ContextOverflowError, ModelError
from lifelong.llm.base import Completion, Prompt, ToolCall, check_messages
from lifelong.llm.openai_compat import parse_tool_calls

# Gemma's turn format. The embedded GGUF carries no chat template, and llama.cpp
# would fall back to ChatML, which Gemma never saw in training.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass
class LocalConfig:
    """Options of the embedded backend (spec options ``?ctx=…&threads=…``)."""

    context_window: int = 8192
    threads: int = 0  # 0: all cores
    chat_template: str | None = None  # a Jinja template; None: the GGUF's own
    cache_prompt: bool = True  # reuse the KV cache of a shared prefix (notes block!)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port


class LocalLLM:
    """A GGUF model run in-process by llama.cpp."""

    def __init__(self, model_path: str | os.PathLike[str], config: LocalConfig | None = None,
                 name: str | None = None) -> None:
        self.config = config or LocalConfig()
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(
                f"model file not found: {path}",
                hint="give the path of a .gguf file (llamacpp:PATH) or use the embedded model (local)",
            )
        try:
            import xllamacpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("xllamacpp is not installed", hint="run `make demo` or `pip install xllamacpp`") from exc

        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = int(self.config.context_window)
        p.n_parallel = 1
        threads = self.config.threads or (os.cpu_count() or 1)
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.warmup = False
        p.verbosity = -1  # llama.cpp logs every slot event otherwise
        p.use_jinja = True  # Jinja templates, and native tool calls where the template has them
        if self.config.chat_template:
            p.chat_template = self.config.chat_template
        p.hostnames = [self.config.host]
        if self.config.port:
            _check_port_free(self.config.host, int(self.config.port))
            p.port = int(self.config.port)
        t0 = time.perf_counter()
        try:
            self._server = xllamacpp.Server(p)
        except Exception as exc:  # llama.cpp raises RuntimeError on a bad file
            raise ModelError(f"llama.cpp could not load {path}: {exc}",
                             hint="check that the file is a complete GGUF model") from exc
        self.load_s = time.perf_counter() - t0
        self.name = name or path.name
        self.context_window = int(self.config.context_window)
        self.address = self._server.listening_address
        self._http = httpx.Client(base_url=self.address, timeout=60.0)
        self._lock = threading.Lock()

    # -- tokens -----------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        r = self._http.post("/tokenize", json={"content": text, "add_special": add_special})
        r.raise_for_status()
        return list(r.json()["tokens"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _prompt_tokens(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return len(self.tokenize(prompt, add_special=True))
        r = self._http.post("/apply-template", json={"messages": list(prompt)})
        r.raise_for_status()
        return len(self.tokenize(r.json()["prompt"], add_special=True))

    # -- completion ------------------------------------------------------
    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion:
        if self._server is None:
            raise ModelError("this model was closed", hint="load it again with load_llm(spec)")
        check_messages(prompt)
        n_prompt = self._prompt_tokens(prompt)
        room = self.context_window - n_prompt
        if room <= 0:
            raise ContextOverflowError(
                f"prompt is {n_prompt} tokens; the context window is {self.context_window}",
                hint="shorten the prompt (fewer notes, a smaller page) or load the model with a "
                "larger window, e.g. local?ctx=16384",
            )
        # Never ask for more than fits: llama.cpp would stop at the window anyway.
        n_predict = max(1, min(int(max_tokens), room))
        body: dict[str, Any] = {
            "temperature": float(temperature),
            "seed": int(seed) if seed is not None else -1,
            "stop": list(stop or []),
            "cache_prompt": self.config.cache_prompt,
        }
        t0 = time.perf_counter()
        with self._lock:  # one slot: one request at a time
            if isinstance(prompt, str):
                body.update(prompt=prompt, n_predict=n_predict)
                out = self._server.handle_completions(body)
            else:
                body.update(messages=list(prompt), max_tokens=n_predict)
                if tools:
                    body["tools"] = list(tools)
                out = self._server.handle_chat_completions(body)
        latency = time.perf_counter() - t0
        return _completion_from_response(out, latency)

    def close(self) -> None:
        if getattr(self, "_http", None) is not None:
            self._http.close()
        self._server = None  # the server's destructor stops llama.cpp's loop

    def __enter__(self) -> LocalLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalLLM({self.name!r}, context_window={self.context_window})"


def _check_port_free(host: str, port: int) -> None:
    """A taken port would surface as llama.cpp failing to load the model: say what it is."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ModelError(f"port {port} on {host} is taken ({exc.strerror or exc})",
                             hint="choose another port (--port), or stop what listens there") from None


def _completion_from_response(out: dict[str, Any], latency: float) -> Completion:
    if "error" in out:
        err = out["error"]
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
            raise ContextOverflowError(msg, hint="shorten the prompt or raise the context window")
        raise ModelError(f"llama.cpp refused the request: {msg}")
    choice = out["choices"][0]
    message = choice.get("message")
    text = (message.get("content") or "") if message is not None else choice.get("text", "")
    calls: tuple[ToolCall, ...] = parse_tool_calls(message.get("tool_calls")) if message else ()
    usage = out.get("usage", {})
    return Completion(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        tool_calls=calls,
        latency_s=latency,
    )
