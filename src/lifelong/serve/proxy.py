"""The memory proxy: an OpenAI-compatible endpoint that gives any chat client a memory.

Point a client's base URL at the proxy instead of the model server::

    lifelong proxy --upstream http://127.0.0.1:8080/v1 -n acme --port 8090
    client = openai.OpenAI(base_url="http://127.0.0.1:8090/v1", api_key="unused")

Every ``POST /v1/chat/completions`` is forwarded to the upstream server with
the namespace's memory put in front of the conversation: its notes block and
the index of its documentation, as a system message (merged into the client's
own system message when it has one). A request that does not stream also gets
two tools, ``lifelong_docs_search`` and ``lifelong_docs_read``: when the model
calls them, the proxy answers from the documentation and asks again, so the
client only ever sees the final answer (or calls to its own tools). Streaming
requests get the notes and the index, and are relayed chunk by chunk.

**When a conversation ends** the proxy reflects on it, as a session does at
the end of a task: the upstream model writes a note and a documentation
entry, checked like every reflection (nothing copied from the prompt's
example, nothing the conversation did not say). An HTTP API is stateless, so
"the end" is defined here, in this order:

1. a request carrying ``X-Lifelong-End: true`` is the last turn: the proxy
   answers it, then reflects;
2. ``POST /v1/conversations/{id}/end`` ends one now and returns what was written;
3. a conversation idle for ``idle_end_s`` seconds (default 600) has ended;
4. when the proxy shuts down, every conversation still open ends.

A conversation is named by the ``X-Lifelong-Conversation`` header, else by a
hash of its first message(s): chat clients resend the whole history every
turn, so its beginning names it. The proxy keeps each open conversation's
latest messages (and the answer) in memory, nothing more; the id comes back in
the ``X-Lifelong-Conversation`` response header. ``GET /v1/models`` and
``POST /v1/completions`` are passed through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lifelong.context.docs import Docs
from lifelong.context.notes import Notes
from lifelong.context.session import Outcome, Session, SessionConfig
from lifelong.errors import LifelongError, ModelError
from lifelong.llm.base import LLM, Completion

CONVERSATION_HEADER = "X-Lifelong-Conversation"
END_HEADER = "X-Lifelong-End"
MEMORY_INTRO = ("Memory kept by lifelong for namespace {namespace!r}: notes that earlier "
                "conversations left for you, and an index of longer documentation.")
DOCS_TOOLS_LINE = "Read a document with the tool lifelong_docs_read; find one with lifelong_docs_search."
DOCS_TOOLS = [
    {"type": "function", "function": {
        "name": "lifelong_docs_search",
        "description": "Search the documentation kept in memory; returns matching paths and snippets.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "lifelong_docs_read",
        "description": "Read a page of a document kept in memory (offset: where the previous page ended).",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string"}, "offset": {"type": "integer", "default": 0}}, "required": ["path"]}}},
]
_OURS = {t["function"]["name"] for t in DOCS_TOOLS}


@dataclass
class ProxyConfig:
    """How the proxy forwards, injects and reflects."""

    upstream: str  # the model server's base URL, e.g. http://127.0.0.1:8080/v1
    api_key: str | None = None  # sent upstream when the client sends no Authorization of its own
    timeout: float = 300.0
    docs_tools: bool = True  # offer lifelong_docs_search/read to requests that do not stream
    max_tool_steps: int = 4
    page_tokens: int = 512
    reflect: bool = True
    idle_end_s: float = 600.0  # a conversation idle this long has ended (0: only by header/endpoint/exit)
    transcript_dir: Path | None = None


@dataclass
class Conversation:
    id: str
    messages: list[dict[str, Any]]  # the client's messages and the last answer, without the memory
    model: str
    last_seen: float
    result: dict[str, Any] | None = None  # what reflection wrote, once it ended


@dataclass
class _State:
    open: dict[str, Conversation] = field(default_factory=dict)
    ended: dict[str, Conversation] = field(default_factory=dict)  # the most recent, for GET


class MemoryProxy:
    """The proxy of one namespace: ``app`` is its ASGI application.

    ``notes`` and ``docs`` are the namespace's memory; ``llm`` is the model that
    reflects when a conversation ends (usually the upstream model, through
    ``openai:URL#MODEL``; its tokenizer should be the one ``notes`` counts with).
    """

    def __init__(self, notes: Notes, docs: Docs | None, config: ProxyConfig, llm: LLM | None = None) -> None:
        if config.reflect and llm is None:
            raise LifelongError("reflection needs a model", hint="pass llm=, or ProxyConfig(reflect=False)")
        self.notes, self.docs, self.config, self.llm = notes, docs, config, llm
        self.upstream = config.upstream.rstrip("/")
        self._http = httpx.Client(timeout=config.timeout)
        self._state = _State()
        self._lock = threading.RLock()  # the store and the conversations, one request at a time
        self._stop = threading.Event()
        self.app = self._build_app()

    # -- the memory put in front of a conversation ---------------------------------
    def memory_message(self, with_tools: bool) -> str:
        """The system text the proxy adds: the notes block and the documentation index."""
        with self._lock:
            block = self.notes.render()
            index = self.docs.tree_text() if self.docs is not None else ""
        parts = [MEMORY_INTRO.format(namespace=self.notes.namespace), block.strip() or "## Notes\n(none yet)"]
        if index:
            parts.append("## Documentation\n" + index)
            if with_tools:
                parts.append(DOCS_TOOLS_LINE)
        return "\n\n".join(parts)

    def inject(self, messages: list[dict[str, Any]], with_tools: bool) -> list[dict[str, Any]]:
        memory = self.memory_message(with_tools)
        out = [dict(m) for m in messages]
        if out and out[0].get("role") in ("system", "developer") and isinstance(out[0].get("content"), str):
            out[0]["content"] = memory + "\n\n" + out[0]["content"]
        else:
            out.insert(0, {"role": "system", "content": memory})
        return out

    # -- conversations -------------------------------------------------------------
    @staticmethod
    def conversation_id(messages: list[dict[str, Any]], header: str | None) -> str:
        if header:
            return header.strip()[:128]
        head = [m for m in messages if m.get("role") in ("system", "developer")][:1]
        head += [m for m in messages if m.get("role") == "user"][:1]
        blob = json.dumps([[m.get("role"), m.get("content")] for m in head], sort_keys=True, default=str)
        return "c" + hashlib.sha256(blob.encode()).hexdigest()[:15]

    def _record(self, conv_id: str, messages: list[dict[str, Any]], answer: dict[str, Any] | None,
                model: str) -> None:
        kept = [m for m in messages if m.get("role") in ("user", "assistant", "system", "developer", "tool")]
        if answer is not None:
            kept.append({"role": "assistant", "content": answer.get("content") or ""})
        with self._lock:
            self._state.open[conv_id] = Conversation(conv_id, kept, model, time.monotonic())
            self._state.ended.pop(conv_id, None)

    def end(self, conv_id: str) -> dict[str, Any]:
        """End a conversation now: reflect on it (if reflection is on) and say what was
        written. Requests go on being answered meanwhile."""
        with self._lock:
            conv = self._state.open.pop(conv_id, None)
            if conv is None:
                done = self._state.ended.get(conv_id)
                if done is not None and done.result is not None:
                    return done.result
                raise KeyError(conv_id)
            self._state.ended[conv_id] = conv  # result None: ending
        result: dict[str, Any] = {"id": conv_id, "turns": len(conv.messages), "notes_written": [],
                                  "docs_written": [], "warnings": [], "error": None}
        if self.config.reflect and self.llm is not None:
            outcome = self._reflect(conv)
            written = [self.notes.get(i) for i in outcome.notes_written]
            result.update(notes_written=[n.text for n in written if n.status == "active"],
                          docs_written=outcome.docs_written, warnings=outcome.warnings, error=outcome.error)
        with self._lock:
            conv.result = result
            while len(self._state.ended) > 256:
                self._state.ended.pop(next(iter(self._state.ended)))
        return result

    def _reflect(self, conv: Conversation) -> Outcome:
        cfg = SessionConfig(transcript_dir=self.config.transcript_dir)
        llm = _PlainOrChat(self.llm)
        try:
            return Session(llm, self.notes, self.docs, cfg).reflect_on(conv.messages,
                                                                    task_id=f"conversation-{conv.id}")
        except LifelongError as exc:  # an upstream that fails now: the conversation ends unreflected
            out = Outcome(session_id="", task_id=conv.id, answer="", score=None, attempts=0, transcript=[])
            out.error = exc.message
            return out

    def end_idle(self, now: float | None = None) -> list[str]:
        """End every conversation idle for ``idle_end_s`` or longer; their ids."""
        if self.config.idle_end_s <= 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [c.id for c in self._state.open.values() if now - c.last_seen >= self.config.idle_end_s]
        for conv_id in idle:
            with contextlib.suppress(KeyError):
                self.end(conv_id)
        return idle

    def end_all(self) -> None:
        with self._lock:
            ids = list(self._state.open)
        for conv_id in ids:
            with contextlib.suppress(KeyError):
                self.end(conv_id)

    # -- forwarding ------------------------------------------------------------------
    def _headers(self, authorization: str | None) -> dict[str, str]:
        if authorization:
            return {"Authorization": authorization}
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def _post(self, path: str, body: dict[str, Any], authorization: str | None) -> httpx.Response:
        try:
            return self._http.post(f"{self.upstream}{path}", json=body, headers=self._headers(authorization))
        except httpx.HTTPError as exc:
            raise _Upstream(502, f"cannot reach the upstream model server at {self.upstream}: {exc}") from None

    def chat(self, body: dict[str, Any], *, conversation: str | None, end: bool,
             authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        """One chat request: (status, JSON body or a stream of bytes, extra headers)."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _Upstream(400, "'messages' must be a non-empty list of message objects")
        conv_id = self.conversation_id(messages, conversation)
        headers = {CONVERSATION_HEADER: conv_id}
        stream = bool(body.get("stream"))
        tools_on = self.config.docs_tools and not stream and self.docs is not None and bool(self.docs.tree())
        out_body = dict(body, messages=self.inject(messages, tools_on))
        model = str(body.get("model") or "")
        if stream:
            return 200, self._relay(out_body, authorization, conv_id, messages, model, end), headers
        status, answer = self._complete_with_tools(out_body, tools_on, authorization)
        if status == 200:
            reply = (answer.get("choices") or [{}])[0].get("message") or {}
            self._record(conv_id, messages, reply, model)
            if end:
                self._end_later(conv_id)
        return status, answer, headers

    def _complete_with_tools(self, body: dict[str, Any], tools_on: bool,
                             authorization: str | None) -> tuple[int, Any]:
        client_tools = list(body.get("tools") or [])
        msgs = list(body["messages"])
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for step in range(self.config.max_tool_steps + 1):
            offer = tools_on and step < self.config.max_tool_steps
            send = dict(body, messages=msgs)
            if offer:
                send["tools"] = client_tools + DOCS_TOOLS
            elif not client_tools:
                send.pop("tools", None)
            r = self._post("/chat/completions", send, authorization)
            try:
                answer = r.json()
            except ValueError:
                return r.status_code, {"error": {"message": r.text[:500], "type": "upstream_error"}}
            if r.status_code != 200:
                return r.status_code, answer
            for key in usage:
                usage[key] += int((answer.get("usage") or {}).get(key, 0) or 0)
            choice = (answer.get("choices") or [{}])[0]
            message = choice.get("message") or {}
            calls = message.get("tool_calls") or []
            ours = [c for c in calls if (c.get("function") or {}).get("name") in _OURS]
            if not ours or not offer:
                break
            theirs = [c for c in calls if c not in ours]
            if theirs:  # the client's own tools: hand those back, ours stay out of its sight
                message["tool_calls"] = theirs
                break
            msgs.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": ours})
            for call in ours:
                msgs.append({"role": "tool", "tool_call_id": call.get("id"), "content": self._run_tool(call)})
        if "usage" in answer:
            answer["usage"] = {**answer["usage"], **usage}
        return 200, answer

    def _run_tool(self, call: dict[str, Any]) -> str:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            return "(error: the arguments are not JSON)"
        if not isinstance(args, dict):
            return "(error: the arguments must be an object)"
        try:
            with self._lock:
                if fn.get("name") == "lifelong_docs_search":
                    hits = self.docs.search(str(args.get("query", "")), limit=5)
                    return "\n".join(f"- {h.path}: {h.snippet}" for h in hits) or "(no matches)"
                page = self.docs.read(str(args.get("path", "")), int(args.get("offset", 0) or 0),
                                      self.config.page_tokens)
                more = f"\n(more: offset {page.next_offset})" if page.more else ""
                return page.text + more
        except (LifelongError, ValueError) as exc:
            return f"(error: {getattr(exc, 'message', str(exc))})"

    def _relay(self, body: dict[str, Any], authorization: str | None, conv_id: str,
               messages: list[dict[str, Any]], model: str, end: bool) -> Iterator[bytes]:
        """The upstream's server-sent events, relayed as they come; the answer is
        collected from the deltas so the conversation is recorded too."""
        text: list[str] = []
        try:
            with self._http.stream("POST", f"{self.upstream}/chat/completions", json=body,
                                   headers=self._headers(authorization)) as r:
                if r.status_code != 200:
                    data = r.read()
                    yield b"data: " + json.dumps({"error": {"message": data.decode(errors="replace")[:500],
                                                            "code": r.status_code}}).encode() + b"\n\n"
                    return
                pending = b""
                for chunk in r.iter_bytes():
                    yield chunk
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        text.append(_delta_text(line))
        except httpx.HTTPError as exc:
            yield b"data: " + json.dumps({"error": {"message": f"upstream: {exc}"}}).encode() + b"\n\n"
            return
        self._record(conv_id, messages, {"content": "".join(text)}, model)
        if end:
            self._end_later(conv_id)

    def _end_later(self, conv_id: str) -> None:
        threading.Thread(target=self._safe_end, args=(conv_id,), name=f"lifelong-reflect-{conv_id}",
                         daemon=True).start()

    def _safe_end(self, conv_id: str) -> None:
        with contextlib.suppress(KeyError):
            self.end(conv_id)

    def _reaper(self) -> None:
        period = max(0.2, min(self.config.idle_end_s / 4, 10.0))
        while not self._stop.wait(period):
            self.end_idle()

    # -- the HTTP application ---------------------------------------------------
    def _build_app(self) -> Any:
        from fastapi import Body, FastAPI, Header
        from fastapi.responses import JSONResponse, StreamingResponse

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any):
            reaper = None
            if self.config.idle_end_s > 0:
                reaper = threading.Thread(target=self._reaper, name="lifelong-idle-end", daemon=True)
                reaper.start()
            try:
                yield
            finally:
                self._stop.set()
                if reaper is not None:
                    reaper.join(timeout=5)
                self.end_all()  # the proxy stops: every open conversation has ended

        app = FastAPI(title="lifelong memory proxy", lifespan=lifespan)

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": {"message": message, "type": "lifelong_proxy_error"}},
                                status_code=status)

        @app.get("/health")
        def health() -> dict[str, Any]:
            return {"status": "ok", "namespace": self.notes.namespace, "upstream": self.upstream}

        @app.post("/v1/chat/completions")
        def chat(body: dict[str, Any] = Body(...),  # noqa: B008
                 x_lifelong_conversation: str | None = Header(None),
                 x_lifelong_end: str | None = Header(None),
                 authorization: str | None = Header(None)) -> Any:
            end = (x_lifelong_end or "").strip().lower() in ("1", "true", "yes")
            try:
                status, payload, headers = self.chat(body, conversation=x_lifelong_conversation, end=end,
                                                      authorization=authorization)
            except _Upstream as exc:
                return error(exc.status, exc.message)
            if isinstance(payload, Iterator):
                return StreamingResponse(payload, media_type="text/event-stream", headers=headers)
            return JSONResponse(payload, status_code=status, headers=headers)

        @app.post("/v1/completions")
        def completions(body: dict[str, Any] = Body(...),  # noqa: B008
                        authorization: str | None = Header(None)) -> Any:
            try:
                r = self._post("/completions", body, authorization)
            except _Upstream as exc:
                return error(exc.status, exc.message)
            return JSONResponse(_json_or_error(r), status_code=r.status_code)

        @app.get("/v1/models")
        def models(authorization: str | None = Header(None)) -> Any:
            try:
                r = self._http.get(f"{self.upstream}/models", headers=self._headers(authorization))
            except httpx.HTTPError as exc:
                return error(502, f"cannot reach the upstream model server at {self.upstream}: {exc}")
            return JSONResponse(_json_or_error(r), status_code=r.status_code)

        @app.get("/v1/conversations")
        def conversations() -> dict[str, Any]:
            now = time.monotonic()
            with self._lock:
                open_ = [{"id": c.id, "turns": len(c.messages), "idle_s": round(now - c.last_seen, 1)}
                         for c in self._state.open.values()]
                ended = [c.result or {"id": c.id, "status": "ending"} for c in self._state.ended.values()]
            return {"open": open_, "ended": ended, "idle_end_s": self.config.idle_end_s}

        @app.post("/v1/conversations/{conv_id}/end")
        def end(conv_id: str) -> Any:
            try:
                return self.end(conv_id)
            except KeyError:
                return error(404, f"no conversation {conv_id!r} (open ones: GET /v1/conversations)")

        return app

    def close(self) -> None:
        self._stop.set()
        self._http.close()


class _Upstream(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _PlainOrChat:
    """The reflecting model, asked with plain completions (what base models follow);
    an upstream without ``/completions`` (a chat-only hosted API) is asked the same
    prompt as one user message instead, from then on."""

    def __init__(self, llm: LLM) -> None:
        self.llm, self.name = llm, getattr(llm, "name", "")
        self.context_window = llm.context_window
        self.chat = False

    def count_tokens(self, text: str) -> int:
        return self.llm.count_tokens(text)

    def complete(self, prompt: Any, **kw: Any) -> Completion:
        if isinstance(prompt, str) and not self.chat:
            try:
                return self.llm.complete(prompt, **kw)
            except ModelError as exc:
                if " 404" not in exc.message and " 405" not in exc.message:
                    raise
                self.chat = True
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return self.llm.complete(prompt, **kw)

    def close(self) -> None:
        pass


def _delta_text(line: bytes) -> str:
    line = line.strip()
    if not line.startswith(b"data:"):
        return ""
    data = line[5:].strip()
    if not data or data == b"[DONE]":
        return ""
    try:
        event = json.loads(data)
    except ValueError:
        return ""
    choices = event.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def _json_or_error(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return {"error": {"message": r.text[:500], "type": "upstream_error"}}


def serve(proxy: MemoryProxy, *, host: str = "127.0.0.1", port: int = 8090, log_level: str = "warning") -> None:
    """Run the proxy with uvicorn until interrupted (open conversations end then)."""
    import uvicorn

    try:
        uvicorn.run(proxy.app, host=host, port=port, log_level=log_level)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down gracefully and re-raised it
        pass
    finally:
        proxy.close()


__all__ = ["CONVERSATION_HEADER", "DOCS_TOOLS", "END_HEADER", "Conversation", "MemoryProxy", "ProxyConfig",
           "serve"]
