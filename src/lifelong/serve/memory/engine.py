"""The engine behind ``lifelong serve``: many sessions, each with its own memory state,
read and written in shared forward passes.

One worker thread runs the model. Requests are jobs queued per session; only the
first job of each session is in flight (per-session ordering: a request for a
busy session waits its turn). Each *step* the worker takes every session that
has a job, gives each the next piece of its work — a segment of the tokens it
appends (cut at multiples of the model's chunk period, counted from the
session's first token, so sessions fed different lengths fall back into step),
or the one token it just generated — groups the sessions whose states can be
stacked (``states.signature``) and whose pieces have the same length, and runs
one forward per group over the stacked states (continuous batching: a request
that arrives during a step joins the next one). Each row of the new state goes
back to its owner only.

A job that finishes writes its session's state to the store (``store``),
naming the version it read; the answer is sent after the commit, so an
acknowledged write survives a killed server. Loaded states are kept in memory
up to a byte budget; the least recently used idle ones are dropped (they are
in the store) and read back on demand.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import LifelongError, NotFoundError, StateError, ValidationError
from lifelong.serve.memory import states as S
from lifelong.serve.memory.store import Conflict, SessionStore, Write


@dataclass
class EngineConfig:
    max_batch: int = 64  # rows in one forward
    memory_budget_bytes: int = 1 << 30  # loaded states beyond this are evicted (LRU)
    max_input_tokens: int = 8192  # per request
    max_new_tokens: int = 1024  # per request
    batching: bool = True  # False: one session per forward (the sequential baseline)
    period: int | None = None  # segment alignment; None: from the model's config
    # "continuous": a request joins the next step; "waves": requests that need the model
    # start together once the previous wave is done (they stay in step, at a latency cost)
    schedule: str = "continuous"


FORWARD_KINDS = frozenset({"append", "generate"})


@dataclass
class Job:
    kind: str  # create | delete | append | generate | snapshot | restore | fork | info
    tenant: str
    sid: str
    tokens: list[int] = field(default_factory=list)  # to write (append; the prompt of generate)
    max_new: int = 0
    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None
    stop: frozenset[int] = frozenset()
    blob: bytes | None = None  # restore
    target: str | None = None  # fork
    ephemeral: bool = False
    future: Future = field(default_factory=Future)
    out: list[int] = field(default_factory=list)
    started: bool = False
    generator: torch.Generator | None = None
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class Entry:
    tenant: str
    sid: str
    state: Any = None
    logits: Tensor | None = None
    tokens: int = 0
    version: int = 0
    loaded: bool = False
    jobs: deque = field(default_factory=deque)
    last_used: float = 0.0
    nbytes: int = 0
    # signatures of ``state`` (False: as it is; True: with pending tokens set aside), each
    # with the state object it was computed for: a step's rows share their batch's
    sigs: dict = field(default_factory=dict)
    committing: bool = False  # its head job's state is being written; the job waits for that


def model_period(config: Any) -> int:
    """Tokens after which every chunked part of the model is at a chunk boundary again."""
    sizes = [64]
    kind = config.kind
    if kind in ("lmm", "mag", "mal", "mac"):
        sizes = [config.memory_chunk]
        if kind == "mac":
            sizes.append(config.segment_len)
    elif kind in ("hope", "hope_attention"):
        sizes = [*config.cms_chunks, config.selfmod_chunk, config.selfmod_memory_chunk]
    elif kind == "deltanet":
        sizes = [config.deltanet_chunk]
    p = 1
    for s in sizes:
        p = math.lcm(p, int(s))
    return p


class Engine:
    def __init__(self, model: torch.nn.Module, store: SessionStore, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        self.store = store
        self.config = config or EngineConfig()
        self.fingerprint = model.fingerprint()
        self.vocab_size = int(model.config.vocab_size)
        self.period = self.config.period or model_period(model.config)
        self.device = next(model.parameters()).device
        self._entries: dict[tuple[str, str], Entry] = {}
        self._current: dict[tuple[str, str], int | None] = {}
        # sessions with a job to work on (head job not waiting for its commit), in arrival order:
        # a step looks at these only, however many sessions are loaded
        self._active: dict[tuple[str, str], Entry] = {}
        self._commits: deque = deque()  # finished jobs for the committer: (entry, job)
        self._commit_cond = threading.Condition()
        self._last_evict = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self.metrics: dict[str, float] = dict.fromkeys(
            ("requests", "requests_failed", "forwards", "rows", "tokens_in", "tokens_generated",
             "reloads", "evictions", "conflicts", "store_writes", "steps",
             "seconds_step", "seconds_model", "seconds_commit"), 0)
        self._thread = threading.Thread(target=self._run, name="lifelong-serve-engine", daemon=True)
        self._committer = threading.Thread(target=self._run_commits, name="lifelong-serve-commit", daemon=True)
        self._committer.start()
        self._thread.start()

    # --- the outside ------------------------------------------------------------------

    def submit(self, job: Job) -> Future:
        if job.kind in ("append", "generate"):
            if len(job.tokens) > self.config.max_input_tokens:
                raise ValidationError(f"{len(job.tokens)} input tokens; this server takes at most "
                                      f"{self.config.max_input_tokens} a request", hint="send it in parts")
            bad = [t for t in job.tokens if not 0 <= t < self.vocab_size]
            if bad:
                raise ValidationError(f"token {bad[0]} is outside the vocabulary (0 … {self.vocab_size - 1})",
                                      hint="send token ids of this model's vocabulary")
            if not 0 <= job.max_new <= self.config.max_new_tokens:
                raise ValidationError(f"max_tokens must be 0 … {self.config.max_new_tokens}, got {job.max_new}",
                                      hint="ask for fewer tokens")
        with self._cond:
            if self._stop:
                raise LifelongError("the server is shutting down", hint="send the request again later")
            key = (job.tenant, job.sid)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = Entry(job.tenant, job.sid)
            entry.jobs.append(job)
            if not entry.committing:
                self._active[key] = entry
            self.metrics["requests"] += 1
            self._cond.notify()
        return job.future

    def ephemeral_id(self) -> str:
        return f"~{uuid.uuid4().hex}"

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        with self._commit_cond:  # the committer writes what is queued, then stops
            self._commit_cond.notify()
        self._committer.join(timeout=30)

    def stats(self) -> dict[str, float]:
        with self._cond:
            loaded = [e for e in self._entries.values() if e.loaded]
            out = dict(self.metrics)
            out["sessions_loaded"] = len(loaded)
            out["state_bytes_loaded"] = sum(e.nbytes for e in loaded)
            out["jobs_queued"] = sum(len(e.jobs) for e in self._entries.values())
        return out

    # --- the worker -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._active:
                    self._cond.wait()
                if self._stop:
                    for e in self._entries.values():
                        for j in list(e.jobs)[1 if e.committing else 0:]:
                            if not j.future.done():
                                j.future.set_exception(LifelongError("the server shut down",
                                                                     hint="send the request again"))
                    return
                heads = list(self._active.values())
                if self.config.schedule == "waves" and any(
                        e.jobs[0].started and e.jobs[0].kind in FORWARD_KINDS for e in heads):
                    # a wave is in flight: new requests that need the model start with the next
                    heads = [e for e in heads if e.jobs[0].started or e.jobs[0].kind not in FORWARD_KINDS]
            try:
                self._step(heads)
            except Exception as exc:  # a bug: fail the jobs in flight, keep serving the rest
                for e in heads:
                    if e.committing:
                        continue
                    if e.jobs and not e.jobs[0].future.done():
                        self._finish(e, exc)
                    e.loaded = False

    def _finish(self, e: Entry, result: Any) -> None:
        with self._cond:
            job = e.jobs.popleft()
            key = (e.tenant, e.sid)
            if job.ephemeral:
                self._entries.pop(key, None)
            if e.jobs and not e.committing:
                self._active[key] = e
                self._cond.notify()
            else:
                self._active.pop(key, None)
        if isinstance(result, BaseException):
            self.metrics["requests_failed"] += 1
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    def _load(self, e: Entry) -> None:
        """Make ``e`` hold the store's current state of its session (NotFound if none)."""
        key = (e.tenant, e.sid)
        if key in self._current:  # read for the whole step at once (``_read_versions``)
            current = self._current[key]
        else:
            row = self.store.get(e.tenant, e.sid, with_state=False)
            current = None if row is None else row.version
        if current is None:
            e.loaded, e.state, e.logits = False, None, None
            raise NotFoundError(f"no session {e.sid!r}", hint="create it first (POST /v1/sessions)")
        if e.loaded and e.version == current:
            return
        row = self.store.get(e.tenant, e.sid)
        if row is None:
            raise NotFoundError(f"no session {e.sid!r}", hint="create it first (POST /v1/sessions)")
        e.loaded = False
        state, logits, tokens = S.decode(row.state or b"", self.fingerprint)
        e.state = _to(state, self.device, self._dtype())
        e.logits, e.tokens, e.version, e.loaded = logits, tokens, row.version, True
        e.nbytes = S.nbytes(e.state)
        self.metrics["reloads"] += 1

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _encode(self, e: Entry) -> bytes:
        return S.encode(e.state, e.logits, e.tokens, self.fingerprint)

    def _start(self, e: Entry, job: Job) -> Any:
        """Begin a job; returns its result when it needs no forward, else ``None``."""
        job.started = True
        k = job.kind
        if k == "create":
            res = self.store.write_many([Write(e.tenant, e.sid, S.encode(None, None, 0, self.fingerprint), 0, 0)])[0]
            if isinstance(res, Conflict):
                raise res
            e.state, e.logits, e.tokens, e.version, e.loaded, e.nbytes = None, None, 0, res, True, 0
            return {"id": e.sid, "version": res, "tokens": 0}
        if k == "delete":
            e.state, e.logits, e.loaded = None, None, False
            if not self.store.delete(e.tenant, e.sid):
                raise NotFoundError(f"no session {e.sid!r}", hint="list sessions: GET /v1/sessions")
            return {"id": e.sid, "deleted": True}
        if k == "restore":
            try:
                state, logits, tokens = S.decode(job.blob or b"", self.fingerprint)
            except StateError as exc:
                raise ValidationError(f"not a state this server can restore: {exc.message}",
                                      hint="send the bytes GET /v1/sessions/ID/state returned") from exc
            version = self.store.put(e.tenant, e.sid, job.blob or b"", tokens)
            e.state, e.logits, e.tokens, e.version, e.loaded = _to(state, self.device, self._dtype()), \
                logits, tokens, version, True
            e.nbytes = S.nbytes(e.state)
            return {"id": e.sid, "version": version, "tokens": tokens}
        if job.ephemeral:
            e.state, e.logits, e.tokens, e.version, e.loaded = None, None, 0, 0, True
        else:
            self._load(e)
        if k == "info":
            return {"id": e.sid, "version": e.version, "tokens": e.tokens, "state_bytes": e.nbytes}
        if k == "snapshot":
            return (self._encode(e), e.version, e.tokens)
        if k == "fork":
            target = job.target or uuid.uuid4().hex
            res = self.store.write_many([Write(e.tenant, target, self._encode(e), e.tokens, 0)])[0]
            if isinstance(res, Conflict):
                raise res
            return {"id": target, "version": res, "tokens": e.tokens, "forked_from": e.sid}
        # append / generate
        if job.temperature > 0:
            job.generator = torch.Generator().manual_seed(
                job.seed if job.seed is not None else int(torch.randint(0, 2**62, (1,))))
        job.max_new = int(job.max_new)
        if k == "generate" and job.max_new and not job.tokens and e.logits is None:
            raise ValidationError(f"session {e.sid!r} holds no tokens to continue",
                                  hint="send a prompt, or append text first")
        if not job.tokens and not job.max_new:
            return {"id": e.sid, "version": e.version, "tokens": e.tokens, "added": 0, "generated": []}
        return None

    def _next_piece(self, e: Entry, job: Job) -> list[int] | None:
        if job.tokens:
            off = e.tokens % self.period
            n = min(len(job.tokens), self.period - off)
            piece, job.tokens = job.tokens[:n], job.tokens[n:]
            return piece
        if job.max_new > 0:
            tok = self._sample(e.logits, job)
            job.out.append(tok)
            job.max_new -= 1
            if tok in job.stop:
                job.max_new = 0
            return [tok]
        return None

    @staticmethod
    def _sample(logits: Tensor, job: Job) -> int:
        last = logits.float()
        if job.temperature <= 0:
            return int(last.argmax())
        last = last / job.temperature
        if job.top_k:
            kth = last.topk(min(job.top_k, last.shape[-1])).values[-1]
            last = last.masked_fill(last < kth, float("-inf"))
        return int(torch.multinomial(last.softmax(-1), 1, generator=job.generator))

    def _read_versions(self, heads: list[Entry]) -> None:
        """The store's current version of every session whose job starts this step, in one
        query per tenant (a server sharing the store may have written them)."""
        self._current = {}
        want: dict[str, list[str]] = {}
        for e in heads:
            job = e.jobs[0]
            if not job.started and not job.ephemeral and job.kind in ("info", "snapshot", "fork", *FORWARD_KINDS):
                want.setdefault(e.tenant, []).append(e.sid)
        for tenant, ids in want.items():
            try:
                for lo in range(0, len(ids), 500):
                    part = ids[lo : lo + 500]
                    found = self.store.versions(tenant, part)
                    self._current.update({(tenant, i): found.get(i) for i in part})
            except LifelongError:
                pass  # each job reads its own version, and meets the error there

    def _step(self, heads: list[Entry]) -> None:
        t0 = time.perf_counter()
        self._read_versions(heads)
        pieces: list[tuple[Entry, Job, list[int]]] = []
        for e in heads:
            job = e.jobs[0]
            try:
                if not job.started:
                    result = self._start(e, job)
                    if result is not None:
                        e.last_used = time.monotonic()
                        self._finish(e, result)
                        continue
                piece = self._next_piece(e, job)
            except LifelongError as exc:
                if isinstance(exc, Conflict):
                    self.metrics["conflicts"] += 1
                self._finish(e, exc)
                continue
            if piece is not None:
                pieces.append((e, job, piece))
        # group what can share a forward: stackable states, pieces of one length
        groups: dict[Any, list[tuple[Entry, Job, list[int]]]] = {}
        for item in pieces:
            e = item[0]
            if not self.config.batching:
                key: Any = (id(e),)
            elif len(item[2]) == 1 and e.state is not None and S.one_token_any_offset(e.state):
                key = ("any-offset", self._signature(e, True))
            else:
                key = (None if e.state is None else self._signature(e, False), len(item[2]))
            groups.setdefault(key, []).append(item)
        failed: set[int] = set()
        if groups:
            self.metrics["steps"] += 1
        for key, items in groups.items():
            strip = key[0] == "any-offset"
            for lo in range(0, len(items), self.config.max_batch):
                batch = items[lo : lo + self.config.max_batch]
                try:
                    self._forward(batch, strip)
                except Exception:
                    # one session's state may be what breaks the forward: run each alone so
                    # only that session's request fails
                    for item in batch:
                        try:
                            self._forward([item])
                        except Exception as exc:
                            e = item[0]
                            failed.add(id(e))
                            e.state, e.logits, e.loaded = None, None, False
                            msg = exc.message if isinstance(exc, LifelongError) else f"{type(exc).__name__}: {exc}"
                            self._finish(e, StateError(f"session {e.sid!r} cannot be read by this model ({msg})",
                                                       hint="restore its state from a copy or delete it"))
        # jobs with nothing left to feed are done: commit their states, then answer
        done = [(e, j) for e, j, _ in pieces if id(e) not in failed and not j.tokens and j.max_new <= 0]
        if done:
            self._hand_over(done)
        self._evict()
        self.metrics["seconds_step"] += time.perf_counter() - t0

    @staticmethod
    def _signature(e: Entry, stripped: bool) -> Any:
        known = e.sigs.get(stripped)
        if known is not None and known[0] is e.state:
            return known[1]
        sig = S.signature(S.strip_pending(e.state) if stripped else e.state)
        e.sigs[stripped] = (e.state, sig)
        return sig

    @torch.no_grad()
    def _forward(self, items: list[tuple[Entry, Job, list[int]]], strip: bool = False) -> None:
        """One forward over the stacked states of ``items``; ``strip``: one token each, sessions
        at different offsets within their memories' chunks (``states.one_token_any_offset``)."""
        ids = torch.tensor([p for _, _, p in items], dtype=torch.long, device=self.device)
        olds = [e.state for e, _, _ in items]
        ins = [S.strip_pending(s) for s in olds] if strip else olds
        state = None if ins[0] is None else (ins[0] if len(items) == 1 else S.stack(ins))
        t0 = time.perf_counter()
        logits, new = self.model(ids, state)
        self.metrics["seconds_model"] += time.perf_counter() - t0
        # rows are views into the batch's tensors while their jobs run (the next step stacks
        # them again); a finished job's state is compacted before it is kept (``_commit``)
        rows = [new] if len(items) == 1 else S.split(new, len(items), copy=False)
        if strip:
            rows = [S.restore_pending(o, r) for o, r in zip(olds, rows)]
        # every row has its batch's signature (it leaves out the batch axis); with pending
        # tokens set aside, so do the rows of a step at any offset
        known = (True, S.signature(ins[0])) if strip else (False, S.signature(new))
        now = time.monotonic()
        last = logits[:, -1].detach().clone()
        for (e, job, piece), row, lg in zip(items, rows, last.unbind(0) if len(items) > 1 else [last[0]]):
            e.state, e.logits = row, lg
            e.sigs = {known[0]: (row, known[1])}
            e.tokens += len(piece)
            e.last_used = now
            if job.kind == "append" or len(job.out) == 0 or piece != job.out[-1:]:
                self.metrics["tokens_in"] += len(piece)
            else:
                self.metrics["tokens_generated"] += 1
        self.metrics["forwards"] += 1
        self.metrics["rows"] += len(items)

    def _hand_over(self, done: list[tuple[Entry, Job]]) -> None:
        """Finished jobs: ephemeral ones are answered now; the others go to the committer,
        their sessions out of the steps until their states are in the store (group commit:
        one transaction for all that finished meanwhile, while the next steps run)."""
        stored = []
        for e, job in done:
            e.state = S.compact(e.state)  # its own tensors, not views into the step's batch
            if e.logits is not None and e.logits.untyped_storage().nbytes() > e.logits.nbytes:
                e.logits = e.logits.clone()
            if job.ephemeral:
                self._finish(e, self._result(e, job))
            else:
                stored.append((e, job))
        if not stored:
            return
        with self._cond:
            for e, _ in stored:
                e.committing = True
                self._active.pop((e.tenant, e.sid), None)
        with self._commit_cond:
            self._commits.extend(stored)
            self._commit_cond.notify()

    def _run_commits(self) -> None:
        while True:
            with self._commit_cond:
                while not self._commits and not self._stop:
                    self._commit_cond.wait()
                if not self._commits:
                    return
                batch = list(self._commits)
                self._commits.clear()
            t0 = time.perf_counter()
            try:
                self._commit(batch)
            except Exception as exc:  # a bug: fail these jobs, keep serving
                for e, _ in batch:
                    if e.committing:
                        with self._cond:
                            e.committing, e.loaded = False, False
                            self._finish(e, exc)
            self.metrics["seconds_commit"] += time.perf_counter() - t0

    def _commit(self, stored: list[tuple[Entry, Job]]) -> None:
        """Write the states of finished jobs in one transaction, then answer each."""
        results: list[Any] = []
        if stored:
            try:
                results = self.store.write_many([Write(e.tenant, e.sid, self._encode(e), e.tokens, e.version)
                                                 for e, _ in stored])
            except LifelongError as exc:
                results = [exc] * len(stored)
            self.metrics["store_writes"] += 1
        for (e, job), res in zip(stored, results):
            with self._cond:  # one hold: the session rejoins the steps with this job gone
                e.nbytes = S.nbytes(e.state)
                e.committing = False
                if isinstance(res, BaseException):
                    e.loaded = False  # what we hold is not what the store holds: read it again next time
                    if isinstance(res, Conflict):
                        self.metrics["conflicts"] += 1
                else:
                    e.version = res
                self._finish(e, res if isinstance(res, BaseException) else self._result(e, job))

    @staticmethod
    def _result(e: Entry, job: Job) -> dict[str, Any]:
        return {"id": e.sid, "version": e.version, "tokens": e.tokens, "generated": list(job.out)}

    def _evict(self) -> None:
        now = time.monotonic()
        if len(self._entries) > 256 and now - self._last_evict < 0.05:
            return  # a scan over every loaded session: with many, a few times a second is enough
        self._last_evict = now
        with self._cond:
            loaded = [e for e in self._entries.values() if e.loaded]
            total = sum(e.nbytes for e in loaded)
            if total > self.config.memory_budget_bytes:
                for e in sorted((e for e in loaded if not e.jobs), key=lambda e: e.last_used):
                    if total <= self.config.memory_budget_bytes:
                        break
                    total -= e.nbytes
                    e.state, e.logits, e.loaded, e.nbytes = None, None, False, 0
                    self.metrics["evictions"] += 1
            for key in [k for k, e in self._entries.items() if not e.loaded and not e.jobs and not e.committing]:
                del self._entries[key]


def _to(state: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``state`` on ``device``; floating tensors in ``dtype`` (a state saved by a float32 server
    restored into a float64 one, say)."""
    def walk(o: Any) -> Any:
        if isinstance(o, Tensor):
            return o.to(device=device, dtype=dtype if o.is_floating_point() else None)
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, tuple):
            return tuple(walk(v) for v in o)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if dataclasses.is_dataclass(o):
            return dataclasses.replace(o, **{f.name: walk(getattr(o, f.name)) for f in dataclasses.fields(o)})
        return o

    return None if state is None else walk(state)
