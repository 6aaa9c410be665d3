"""OpenAI-compatible servers: vLLM, llama.cpp's server, Ollama, hosted APIs.

Chat and plain completions, native tool calls where the server supports them,
timeouts, and retries with backoff on 429 and 5xx. The API key comes from the
environment (``LIFELONG_API_KEY``, else ``OPENAI_API_KEY``). Token counts come
from the server: its ``usage`` numbers, and its ``/tokenize`` endpoint
(llama.cpp and vLLM have one) for ``count_tokens``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from lifelong.errors import ConfigError, ContextOverflowError, ModelError
from lifelong.llm.base import Completion, Prompt, ToolCall, check_messages, clean_text
from lifelong.redact import redact, redact_url, remember

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class OpenAIConfig:
    """Spec options: ``openai:URL#MODEL?ctx=8192&timeout=120&retries=4``."""

    context_window: int | None = None  # None: ask the server
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 0.5  # seconds; doubles per retry, or the server's Retry-After


def parse_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls = []
    for i, c in enumerate(raw or []):
        fn = c.get("function", {})
        args = fn.get("arguments") or "{}"
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = {"_raw": args}
        calls.append(ToolCall(id=str(c.get("id") or f"call_{i}"), name=str(fn.get("name", "")),
                              arguments=args if isinstance(args, dict) else {"_value": args}))
    return tuple(calls)


def _shorten(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OpenAILLM:
    """A model behind an OpenAI-compatible HTTP API."""

    def __init__(self, base_url: str, model: str, config: OpenAIConfig | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"not an http(s) URL: {redact_url(base_url)!r}",
                              hint="use openai:http://HOST:PORT/v1#MODEL")
        self.config = config or OpenAIConfig()
        self.base_url = base_url.rstrip("/")
        # llama.cpp and vLLM serve /tokenize and /props at the root, beside /v1.
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.model = model
        self.name = model
        key = os.environ.get("LIFELONG_API_KEY") or os.environ.get("OPENAI_API_KEY")
        remember(key)
        self.shown_url = redact_url(self.base_url)  # what messages may show of the URL
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(timeout=self.config.timeout, headers=headers)
        self._context_window = self.config.context_window

    # -- HTTP with retries -------------------------------------------------
    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        delay = self.config.backoff
        for attempt in range(self.config.retries + 1):
            try:
                r = self._http.request(method, url, **kw)
            except httpx.TimeoutException as exc:
                if attempt == self.config.retries:
                    raise ModelError(f"{redact_url(url)} did not answer within {self.config.timeout:g} s",
                                     hint="raise ?timeout=SECONDS or check the server's load") from exc
            except httpx.TransportError as exc:
                if attempt == self.config.retries:
                    raise ModelError(f"cannot reach the model server at {redact_url(url)}: {redact(str(exc))}",
                                     hint="start the server (e.g. `lifelong llm serve`) or fix the URL") from exc
            else:
                if r.status_code not in RETRY_STATUS or attempt == self.config.retries:
                    return r
                after = r.headers.get("retry-after")
                if after and after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(after))
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._request("POST", url, json=body)
        if r.status_code >= 400:
            try:
                err = r.json().get("error", r.text)
            except (ValueError, AttributeError):  # not JSON, or not an object
                err = r.text
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            # A server may echo the request (headers included) in its error: never show the key.
            msg = _shorten(redact(str(msg)))
            if "context" in msg.lower() and ("exceed" in msg.lower() or "length" in msg.lower()):
                raise ContextOverflowError(msg, hint="shorten the prompt or use a model with a larger window")
            if r.status_code in (401, 403):
                raise ModelError(f"the server refused the API key ({r.status_code}): {msg}",
                                 hint="set LIFELONG_API_KEY (or OPENAI_API_KEY)")
            raise ModelError(f"{redact_url(url)} answered {r.status_code}: {msg}")
        with self._reading("an answer"):
            out = r.json()
            if not isinstance(out, dict):
                raise TypeError(f"a JSON {type(out).__name__}, not an object")
            return out

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A server's answer that is not what the OpenAI API says is a ModelError, not a KeyError."""
        try:
            yield
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(_shorten(redact(f"{self.shown_url} sent {what} lifelong cannot read "
                                             f"({type(exc).__name__}: {exc})"), 300),
                             hint="check that the URL is an OpenAI-compatible API (…/v1)") from None

    # -- the protocol -----------------------------------------------------
    @property
    def context_window(self) -> int:
        if self._context_window is None:
            self._context_window = self._discover_context_window()
        return self._context_window

    def _discover_context_window(self) -> int:
        with self._reading("a model description"):
            return self._context_window_from_server()

    def _context_window_from_server(self) -> int:
        r = self._request("GET", f"{self.root_url}/props")
        if r.status_code == 200:
            props = r.json()
            n = props.get("default_generation_settings", {}).get("n_ctx") or props.get("n_ctx")
            if n:
                return int(n)
        r = self._request("GET", f"{self.base_url}/models")
        if r.status_code == 200:
            for m in r.json().get("data", []):
                if m.get("id") == self.model or len(r.json().get("data", [])) == 1:
                    n = m.get("max_model_len") or (m.get("meta") or {}).get("n_ctx_train")
                    if n:
                        return int(n)
        raise ConfigError(f"the server at {self.shown_url} does not say its context window",
                          hint="add it to the spec, e.g. openai:URL#MODEL?ctx=8192")

    def count_tokens(self, text: str) -> int:
        with self._reading("a token count"):
            return self._count_tokens(text)

    def _count_tokens(self, text: str) -> int:
        r = self._request("POST", f"{self.root_url}/tokenize", json={"content": text, "add_special": False})
        if r.status_code == 200 and "tokens" in r.json():
            return len(r.json()["tokens"])
        r = self._request("POST", f"{self.root_url}/tokenize",
                          json={"model": self.model, "prompt": text, "add_special_tokens": False})
        if r.status_code == 200 and "count" in r.json():
            return int(r.json()["count"])
        raise ModelError(f"the server at {redact_url(self.root_url)} has no /tokenize endpoint to count tokens",
                         hint="use a server with one (llama.cpp, vLLM); lifelong does not guess counts")

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
        check_messages(prompt)
        body: dict[str, Any] = {"model": self.model, "max_tokens": int(max_tokens),
                                "temperature": float(temperature)}
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = int(seed)
        t0 = time.perf_counter()
        if isinstance(prompt, str):
            if tools:
                raise ConfigError("native tool calls need chat messages", hint="pass a list of messages")
            out = self._post_json(f"{self.base_url}/completions", {**body, "prompt": prompt})
        else:
            if tools:
                body["tools"] = list(tools)
            out = self._post_json(f"{self.base_url}/chat/completions", {**body, "messages": list(prompt)})
        with self._reading("a completion"):
            usage = out.get("usage") or {}
            if "prompt_tokens" not in usage:
                raise ModelError(f"{self.shown_url} returned no usage numbers",
                                 hint="lifelong needs the server's token counts; use a server that reports usage")
            choice = out["choices"][0]
            if isinstance(prompt, str):
                text, calls = choice.get("text") or "", ()
            else:
                message = choice.get("message") or {}
                text, calls = message.get("content") or "", parse_tool_calls(message.get("tool_calls"))
            return Completion(
                text=clean_text(str(text)),
                prompt_tokens=int(usage["prompt_tokens"]),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
                tool_calls=calls,
                latency_s=time.perf_counter() - t0,
            )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"OpenAILLM({self.shown_url!r}, model={self.model!r})"
