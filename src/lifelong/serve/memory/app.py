"""The HTTP face of ``lifelong serve``: sessions with their own memory, over FastAPI.

Routes (JSON unless said otherwise; errors are ``{"error": {"message", "hint", "type"}}``
with a 4xx status):

- ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /v1/models``;
- ``POST /v1/sessions`` ``{"id"?}`` → 201; ``GET /v1/sessions``; ``GET|DELETE /v1/sessions/{id}``;
- ``POST /v1/sessions/{id}/fork`` ``{"id"?}``: a new session with a copy of the state;
- ``POST /v1/sessions/{id}/append`` ``{"text"}`` or ``{"tokens"}``: the memory writes them;
- ``POST /v1/sessions/{id}/generate`` ``{"prompt"|"tokens"?, "max_tokens", "temperature",
  "top_k", "seed"}``: reads, and writes the prompt and what it generates;
- ``GET /v1/sessions/{id}/state`` (``application/octet-stream``, the version in
  ``X-Lifelong-Version``) and ``PUT`` the same bytes back to restore them;
- ``POST /v1/completions``: OpenAI's completions, the session named by the body's
  ``session`` field or the ``X-Lifelong-Session`` header (made on first use); without
  one, a fresh state that is not kept.

With tenants configured (``tokens``: bearer token → tenant) every route but
``/health`` needs ``Authorization: Bearer TOKEN`` and sees only its tenant's sessions.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from lifelong.errors import ConfigError, LifelongError, NotFoundError, StateError, ValidationError
from lifelong.serve.memory.engine import Engine, Job
from lifelong.serve.memory.store import Conflict

SESSION_HEADER = "X-Lifelong-Session"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(sid: Any) -> str:
    if not isinstance(sid, str) or not _ID.match(sid):
        raise ValidationError(f"bad session id {str(sid)[:40]!r}",
                              hint="1-128 characters: letters, digits, '.', '_', '-', starting with a "
                              "letter or digit")
    return sid


def _status(exc: LifelongError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, StateError):  # a stored state that cannot be read
        return 409
    if isinstance(exc, (ValidationError, ConfigError)):
        return 400
    return 503


def build_app(engine: Engine, *, model_name: str = "lifelong", tokenizer: Any = None,
              tokens: dict[str, str] | None = None, max_body_bytes: int = 64 << 20):
    app = FastAPI(title="lifelong serve", docs_url=None, redoc_url=None, openapi_url=None)
    started = time.time()

    def error(status: int, message: str, hint: str | None = None, kind: str = "invalid_request_error"):
        return JSONResponse({"error": {"message": message, "hint": hint, "type": kind}}, status_code=status)

    @app.exception_handler(LifelongError)
    async def _lifelong_error(request: Request, exc: LifelongError):
        return error(_status(exc), exc.message, exc.hint, type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"malformed request: {where or 'body'}: {first.get('msg', 'invalid')}",
                     "see the route's fields in the README")

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return error(413, f"request body over {max_body_bytes} bytes", "send less at a time")
        if tokens and request.url.path != "/health":
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            tenant = next((t for tok, t in tokens.items() if given and hmac.compare_digest(tok, given)), None)
            if tenant is None:
                return error(401, "missing or unknown bearer token", "send Authorization: Bearer TOKEN",
                             "authentication_error")
            request.state.tenant = tenant
        else:
            request.state.tenant = "default"
        return await call_next(request)

    async def run(job: Job) -> Any:
        return await asyncio.wrap_future(engine.submit(job))

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise ValidationError(f"request body over {max_body_bytes} bytes", hint="send less at a time")
        if not raw:
            return {}
        import json

        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("the body is not JSON", hint="send a JSON object") from None
        if not isinstance(data, dict):
            raise ValidationError("the body must be a JSON object", hint="send {…}")
        return data

    def text_or_tokens(data: dict[str, Any], text_key: str, required: bool) -> list[int]:
        if "tokens" in data and data["tokens"] is not None:
            toks = data["tokens"]
            if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                     for t in toks):
                raise ValidationError("tokens must be a list of integers", hint="e.g. [1, 2, 3]")
            return toks
        text = data.get(text_key)
        if text is None:
            if required:
                raise ValidationError(f"send {text_key!r} (text) or 'tokens' (ids)", hint="e.g. {\"text\": \"…\"}")
            return []
        if not isinstance(text, str):
            raise ValidationError(f"{text_key} must be a string", hint="send text, or ids as 'tokens'")
        if tokenizer is None:
            raise ValidationError("this model has no tokenizer", hint="send token ids as 'tokens'")
        if "\x00" in text:
            raise ValidationError("text holds a NUL character", hint="remove it")
        if len(text) > engine.config.max_input_tokens * 8:
            raise ValidationError("text too long for one request", hint="send it in parts")
        return tokenizer.encode(text)

    def number(data: dict[str, Any], key: str, default: Any, kind: type, lo: float, hi: float) -> Any:
        v = data.get(key, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            raise ValidationError(f"{key} must be a {'whole ' if kind is int else ''}number",
                                  hint=f"{lo} … {hi}")
        if not lo <= v <= hi:
            raise ValidationError(f"{key} must be {lo} … {hi}, got {v}", hint=f"{lo} … {hi}")
        return kind(v)

    def gen_job(request: Request, sid: str, data: dict[str, Any], prompt_key: str, **kw: Any) -> Job:
        stop = frozenset({tokenizer.eos_id}) if tokenizer is not None and data.get("stop_at_eos", True) else frozenset()
        return Job("generate", request.state.tenant, sid, tokens=text_or_tokens(data, prompt_key, False),
                   max_new=number(data, "max_tokens", 16, int, 0, engine.config.max_new_tokens),
                   temperature=number(data, "temperature", 0.0, float, 0.0, 100.0),
                   top_k=number(data, "top_k", None, int, 1, 1 << 30),
                   seed=number(data, "seed", None, int, 0, 2**62), stop=stop, **kw)

    def decode(ids: list[int]) -> str | None:
        return tokenizer.decode(ids) if tokenizer is not None else None

    # --- routes -------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "uptime_s": round(time.time() - started, 3)}

    @app.get("/metrics")
    async def metrics():
        lines = []
        for k, v in engine.stats().items():
            lines.append(f"# TYPE lifelong_serve_{k} {'gauge' if k in ('sessions_loaded', 'state_bytes_loaded', 'jobs_queued') else 'counter'}")
            lines.append(f"lifelong_serve_{k} {v:.6g}")
        return PlainTextResponse("\n".join(lines) + "\n")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "lifelong"}]}

    @app.post("/v1/sessions", status_code=201)
    async def create(request: Request):
        data = await body(request)
        sid = check_id(data["id"]) if data.get("id") is not None else engine.ephemeral_id()[1:]
        return await run(Job("create", request.state.tenant, sid))

    @app.get("/v1/sessions")
    async def list_sessions(request: Request):
        rows = await asyncio.to_thread(engine.store.list, request.state.tenant)
        return {"sessions": [{"id": r.id, "version": r.version, "tokens": r.tokens, "updated": r.updated}
                             for r in rows]}

    @app.get("/v1/sessions/{sid}")
    async def info(request: Request, sid: str):
        return await run(Job("info", request.state.tenant, check_id(sid)))

    @app.delete("/v1/sessions/{sid}")
    async def delete(request: Request, sid: str):
        return await run(Job("delete", request.state.tenant, check_id(sid)))

    @app.post("/v1/sessions/{sid}/fork", status_code=201)
    async def fork(request: Request, sid: str):
        data = await body(request)
        target = check_id(data["id"]) if data.get("id") is not None else None
        return await run(Job("fork", request.state.tenant, check_id(sid), target=target))

    @app.post("/v1/sessions/{sid}/append")
    async def append(request: Request, sid: str):
        check_id(sid)
        data = await body(request)
        toks = text_or_tokens(data, "text", True)
        res = await run(Job("append", request.state.tenant, sid, tokens=toks))
        return {"id": sid, "version": res["version"], "tokens": res["tokens"], "added": len(toks)}

    @app.post("/v1/sessions/{sid}/generate")
    async def generate(request: Request, sid: str):
        check_id(sid)
        res = await run(gen_job(request, sid, await body(request), "prompt"))
        return {"id": sid, "version": res["version"], "tokens": res["tokens"],
                "generated": res["generated"], "text": decode(res["generated"])}

    @app.get("/v1/sessions/{sid}/state")
    async def fetch(request: Request, sid: str):
        blob, version, ntok = await run(Job("snapshot", request.state.tenant, check_id(sid)))
        return Response(blob, media_type="application/octet-stream",
                        headers={"X-Lifelong-Version": str(version), "X-Lifelong-Tokens": str(ntok)})

    @app.put("/v1/sessions/{sid}/state")
    async def restore(request: Request, sid: str):
        check_id(sid)
        blob = await request.body()
        if len(blob) > max_body_bytes:
            raise ValidationError(f"state over {max_body_bytes} bytes", hint="raise --max-body")
        return await run(Job("restore", request.state.tenant, sid, blob=blob))

    @app.post("/v1/completions")
    async def completions(request: Request):
        data = await body(request)
        sid = data.get("session") or request.headers.get(SESSION_HEADER)
        prompt = data.get("prompt", "")
        if isinstance(prompt, list):
            if len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            elif prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                data = {**data, "tokens": prompt}
                prompt = None
            else:
                raise ValidationError("prompt must be a string, one string in a list, or token ids",
                                      hint="batch across sessions by sending requests concurrently")
        data = {**data, "prompt": prompt}
        if data.get("stream"):
            raise ValidationError("streaming is not supported", hint="send stream: false")
        if int(data.get("n", 1) or 1) != 1:
            raise ValidationError("n must be 1", hint="send one request per sample")
        tenant = request.state.tenant
        if sid is None:
            job = gen_job(request, engine.ephemeral_id(), data, "prompt", ephemeral=True)
        else:
            check_id(sid)
            try:
                await run(Job("create", tenant, sid))
            except Conflict:
                pass
            job = gen_job(request, sid, data, "prompt")
        n_in, want = len(job.tokens), job.max_new
        res = await run(job)
        out = res["generated"]
        return {
            "id": f"cmpl-{int(time.time() * 1000)}", "object": "text_completion", "created": int(time.time()),
            "model": model_name, "session": sid,
            "choices": [{"index": 0, "text": decode(out) or "", "logprobs": None, "tokens": out,
                         "finish_reason": "length" if len(out) >= want else "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": len(out), "total_tokens": n_in + len(out)},
        }

    return app
