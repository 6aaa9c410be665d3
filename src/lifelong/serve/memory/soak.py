"""Soak run of ``lifelong serve``: random writes on many sessions while the server is killed
(SIGKILL) at random moments and started again; then every acknowledged write is checked.

The server runs as a subprocess (``python -m lifelong serve``). One client thread per
session sends, one request at a time, random appends (1–20 token ids) and greedy
generates (a prompt of 0–8 ids, 1–6 new tokens), and records every answer: the tokens
written, the generated ids and the session's new version. A request cut off by a kill is
resolved after the restart from the session's version: applied (version + 1; its
generated ids are then recomputed in the replay) or not (version unchanged).

Checked at the end, against the store the last server serves:

- **acknowledged writes lost**: for every session, each acknowledged version is exactly
  the previous one + 1 (a lost write would hand out its version again), the final
  version and token count are the acknowledged ones, and an acknowledged write that a
  later read contradicts counts as lost;
- **cross-session leaks / wrong states**: each session's stored state equals the model fed
  that session's own acknowledged writes alone, in order (in float64, within 1e-9),
  and every acknowledged generation equals the replay's greedy tokens.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SoakResult:
    store: str
    seconds: float
    sessions: int
    kills: int
    requests_acked: int
    tokens_acked: int
    requests_refused: int  # answered with an error status (not applied)
    cut_off_applied: int  # cut off by a kill, found applied after the restart
    cut_off_dropped: int  # cut off by a kill, not applied
    acked_writes_lost: int
    version_errors: int  # an acknowledged version that was not the previous one + 1
    state_mismatches: int  # sessions whose stored state is not the replay of their own writes
    generation_mismatches: int  # acknowledged generations that differ from the replay
    max_state_diff: float
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return not (self.acked_writes_lost or self.version_errors or self.state_mismatches
                    or self.generation_mismatches)


@dataclass
class _Write:
    tokens: list[int]
    max_new: int
    generated: list[int] | None  # None: applied without an answer; the replay recomputes them


@dataclass
class _Session:
    sid: str
    version: int = 1  # after create
    tokens: int = 0
    writes: list[_Write] = field(default_factory=list)
    cut_off: tuple[list[int], int] | None = None  # a request whose answer never came


class _Server:
    def __init__(self, checkpoint: str, store: str, port: int, dtype: str, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "lifelong", "serve", checkpoint, "--store", store, "--port", str(port),
                    "--dtype", dtype, "--threads", "1"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        import httpx

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not start in {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def soak(checkpoint: str, store: str, *, seconds: float = 120.0, sessions: int = 16,
         kill_every: tuple[float, float] = (2.0, 8.0), seed: int = 0, port: int | None = None,
         dtype: str = "float64", workdir: str | None = None, progress=None) -> SoakResult:
    """Run the soak for ``seconds`` against a server on ``store`` (a URL); see the module."""
    import httpx

    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="lifelong-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    server = _Server(checkpoint, store, port, dtype, work / "server.log")
    say = progress or (lambda s: None)
    events: list[str] = []
    server.start()
    run = f"soak{seed}-{int(time.time()) % 10**6}"
    states = [_Session(f"{run}-{i}") for i in range(sessions)]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for s in states:
            r = c.post("/v1/sessions", json={"id": s.sid})
            if r.status_code != 201:
                raise RuntimeError(f"create failed: {r.status_code} {r.text[:200]}")
    counts = {"acked": 0, "tokens": 0, "refused": 0, "applied": 0, "dropped": 0, "version": 0, "lost": 0}
    lock = threading.Lock()
    up = threading.Event()
    up.set()
    stop_at = time.time() + seconds
    vocab = 250

    def resolve(c: httpx.Client, s: _Session) -> None:
        """After a restart: was the cut-off request applied?"""
        toks, max_new = s.cut_off  # type: ignore[misc]
        info = c.get(f"/v1/sessions/{s.sid}").json()
        v, n = int(info["version"]), int(info["tokens"])
        with lock:
            if v == s.version and n == s.tokens:
                counts["dropped"] += 1
            elif v == s.version + 1 and n == s.tokens + len(toks) + max_new:
                counts["applied"] += 1
                s.writes.append(_Write(toks, max_new, None))
                s.version, s.tokens = v, n
            else:  # an acknowledged write is missing, or something else was written
                counts["lost"] += 1
                events.append(f"{s.sid}: after a restart version {v} tokens {n}, expected "
                              f"{s.version}/{s.tokens} (+1 request of {len(toks) + max_new})")
                s.version, s.tokens = v, n
        s.cut_off = None

    def client(s: _Session, wrng: random.Random) -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            while time.time() < stop_at:
                up.wait()
                if s.cut_off is not None:
                    try:
                        resolve(c, s)
                    except (httpx.HTTPError, ValueError, KeyError):
                        time.sleep(0.05)
                        continue
                if wrng.random() < 0.5 or s.tokens == 0:
                    toks, max_new = [wrng.randrange(1, vocab) for _ in range(wrng.randint(1, 20))], 0
                    path, body = "append", {"tokens": toks}
                else:
                    toks, max_new = [wrng.randrange(1, vocab) for _ in range(wrng.randint(0, 8))], wrng.randint(1, 6)
                    path, body = "generate", {"tokens": toks, "max_tokens": max_new, "stop_at_eos": False}
                try:
                    r = c.post(f"/v1/sessions/{s.sid}/{path}", json=body)
                except httpx.HTTPError:
                    s.cut_off = (toks, max_new)
                    time.sleep(0.05)
                    continue
                if r.status_code != 200:
                    with lock:
                        counts["refused"] += 1
                    continue
                out = r.json()
                with lock:
                    if int(out["version"]) != s.version + 1:
                        counts["version"] += 1
                        events.append(f"{s.sid}: acknowledged version {out['version']} after {s.version}")
                    s.version, s.tokens = int(out["version"]), int(out["tokens"])
                    gen = [int(t) for t in out.get("generated", [])] if path == "generate" else []
                    s.writes.append(_Write(toks, max_new, gen))
                    counts["acked"] += 1
                    counts["tokens"] += len(toks) + len(gen)

    threads = [threading.Thread(target=client, args=(s, random.Random(rng.random())), daemon=True)
               for s in states]
    t0 = time.time()
    for t in threads:
        t.start()
    kills = 0
    try:
        while time.time() < stop_at:
            time.sleep(min(rng.uniform(*kill_every), max(0.0, stop_at - time.time())))
            if time.time() >= stop_at:
                break
            server.kill()
            kills += 1
            up.clear()
            say(f"kill {kills} at {time.time() - t0:.1f} s")
            server.start()
            up.set()
        for t in threads:
            t.join(timeout=120)
        with httpx.Client(base_url=server.url, timeout=300) as c:
            for s in states:
                if s.cut_off is not None:
                    resolve(c, s)
            say("replaying every session's acknowledged writes")
            checked = _verify(c, checkpoint, states, dtype, counts, events)
    finally:
        server.kill()
    return SoakResult(store=_redacted(store), seconds=round(time.time() - t0, 1), sessions=sessions, kills=kills,
                      requests_acked=counts["acked"], tokens_acked=counts["tokens"],
                      requests_refused=counts["refused"], cut_off_applied=counts["applied"],
                      cut_off_dropped=counts["dropped"], acked_writes_lost=counts["lost"],
                      version_errors=counts["version"], state_mismatches=checked[0],
                      generation_mismatches=checked[1], max_state_diff=checked[2], events=events[:50])


def _verify(c, checkpoint: str, states: list[_Session], dtype: str, counts: dict, events: list[str]):
    import torch

    from lifelong.serve.memory import states as S
    from lifelong.serve.memory.engine import model_period
    from lifelong.train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    model = model.to(getattr(torch, dtype)).eval()
    period = model_period(model.config)
    fingerprint = model.fingerprint()
    bad_states = bad_gens = 0
    worst = 0.0
    for s in states:
        info = c.get(f"/v1/sessions/{s.sid}").json()
        if int(info["version"]) != s.version or int(info["tokens"]) != s.tokens:
            counts["lost"] += 1
            events.append(f"{s.sid}: final version/tokens {info['version']}/{info['tokens']}, "
                          f"acknowledged {s.version}/{s.tokens}")
        r = c.get(f"/v1/sessions/{s.sid}/state")
        got, got_logits, got_n = S.decode(r.content, fingerprint)
        state, logits, pos = None, None, 0
        with torch.no_grad():
            for w in s.writes:
                toks = list(w.tokens)
                while toks:  # the server's cuts: multiples of the period from the first token
                    n = min(len(toks), period - pos % period)
                    lg, state = model(torch.tensor([toks[:n]]), state)
                    logits, pos, toks = lg[0, -1], pos + n, toks[n:]
                out = []
                for _ in range(w.max_new):
                    t = int(logits.float().argmax())
                    out.append(t)
                    lg, state = model(torch.tensor([[t]]), state)
                    logits, pos = lg[0, -1], pos + 1
                if w.generated is not None and w.generated != out:
                    bad_gens += 1
        want: dict[str, Any] = {}
        have: dict[str, Any] = {}
        S._flatten(state, want)
        S._flatten(got, have)
        diff = 0.0
        if want.keys() != have.keys() or got_n != pos:
            diff = float("inf")
        else:
            for k in want:
                if want[k].shape != have[k].shape:
                    diff = float("inf")
                    break
                if want[k].is_floating_point():
                    diff = max(diff, float((want[k].double() - have[k].double()).abs().max()) if want[k].numel() else 0.0)
                elif not torch.equal(want[k], have[k]):
                    diff = float("inf")
            if logits is not None and got_logits is not None:
                diff = max(diff, float((logits.double() - got_logits.double()).abs().max()))
        worst = max(worst, diff)
        if diff > 1e-9:
            bad_states += 1
            events.append(f"{s.sid}: stored state differs from the replay of its writes by {diff:.3g}")
    return bad_states, bad_gens, worst


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redacted(url: str) -> str:
    from lifelong.redact import redact_url

    return "sqlite" if url.startswith("sqlite") else redact_url(url)
