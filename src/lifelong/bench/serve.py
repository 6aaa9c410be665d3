"""Load test of ``lifelong serve``: an async httpx client against a running server.

For each number of concurrent sessions, every session is created, then each sends
``requests`` generate calls one after another (a prompt of ``prompt_tokens`` ids and
``new_tokens`` greedy tokens); all sessions run at once. Reported: generated tokens
per second (prompt tokens are written too, and counted apart), p50 / p99 latency of a
request, and the server's rows per forward (from ``/metrics``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass


@dataclass
class LoadResult:
    sessions: int
    requests: int
    seconds: float
    tokens_per_s: float  # generated
    written_per_s: float  # prompt + generated tokens the memories wrote
    p50_ms: float
    p99_ms: float
    rows_per_forward: float
    errors: int
    # the server's own account of the run (seconds, from /metrics): its engine busy in
    # steps, of which in the model's forwards and in committing finished requests
    engine_s: float = 0.0
    model_s: float = 0.0
    commit_s: float = 0.0
    forwards: int = 0
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition(" ")
            out[k] = float(v)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


async def _run(url: str, sessions: int, requests: int, prompt_tokens: int, new_tokens: int,
               token: str | None, seed: int, vocab: int) -> LoadResult:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rng = random.Random(seed)
    run_id = f"load{seed}-{int(time.time() * 1000) % 10**9}"
    # one client (one connection) per session, as separate users have: a single client's
    # pool of many connections spends time quadratic in them assigning requests, and at
    # 64 sessions the load generator, not the server, set the pace
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=600,
                                 limits=httpx.Limits(max_connections=1)) for _ in range(sessions)]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as c:
        ids = [f"{run_id}-{sessions}-{i}" for i in range(sessions)]
        own = dict(zip(ids, clients))
        await asyncio.gather(*(own[s].post("/v1/sessions", json={"id": s}) for s in ids))
        before = _metrics((await c.get("/metrics")).text)
        lat: list[float] = []
        errors = [0]

        async def one(sid: str) -> None:
            for _ in range(requests):
                prompt = [rng.randrange(1, vocab) for _ in range(prompt_tokens)]
                t0 = time.perf_counter()
                try:
                    r = await own[sid].post(f"/v1/sessions/{sid}/generate",
                                     json={"tokens": prompt, "max_tokens": new_tokens, "stop_at_eos": False})
                except httpx.HTTPError:  # counted, not fatal: the run goes on
                    errors[0] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[0] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(s) for s in ids))
        dt = time.perf_counter() - t0
        after = _metrics((await c.get("/metrics")).text)
        await asyncio.gather(*(own[s].delete(f"/v1/sessions/{s}") for s in ids))
        await asyncio.gather(*(cl.aclose() for cl in clients))
    fw = after.get("lifelong_serve_forwards", 0) - before.get("lifelong_serve_forwards", 0)
    rows = after.get("lifelong_serve_rows", 0) - before.get("lifelong_serve_rows", 0)
    n = sessions * requests

    def delta(name: str) -> float:
        return after.get(f"lifelong_serve_{name}", 0.0) - before.get(f"lifelong_serve_{name}", 0.0)

    return LoadResult(sessions, n, dt, n * new_tokens / dt, n * (new_tokens + prompt_tokens) / dt,
                      1000 * _pct(lat, 0.5), 1000 * _pct(lat, 0.99), rows / fw if fw else 0.0, errors[0],
                      delta("seconds_step"), delta("seconds_model"), delta("seconds_commit"), int(fw),
                      int(delta("steps")))


def load_test(url: str, sessions: list[int], *, requests: int = 4, prompt_tokens: int = 16,
              new_tokens: int = 8, token: str | None = None, seed: int = 0,
              vocab: int = 256, on_result=None) -> list[LoadResult]:
    """Run the load for each count of concurrent sessions, one after another (after an
    untimed warm-up: the first forwards of a process build kernels)."""
    asyncio.run(_run(url.rstrip("/"), 2, 1, prompt_tokens, new_tokens, token, seed + 1, vocab))
    out = []
    for n in sessions:
        out.append(asyncio.run(_run(url.rstrip("/"), n, requests, prompt_tokens, new_tokens, token, seed, vocab)))
        if on_result:
            on_result(out[-1])
    return out
