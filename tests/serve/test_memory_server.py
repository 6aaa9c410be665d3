"""``lifelong serve`` over real HTTP on loopback, with tiny untrained checkpoints."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
import torch

from lifelong.serve.memory import states as S
from lifelong.serve.memory.engine import model_period
from lifelong.serve.memory.serve import ServeConfig
from lifelong.serve.memory.store import Conflict, SessionStore, Write
from lifelong.train.checkpoint import load_checkpoint

from .memory_server import ThreadServer, free_port, tiny_checkpoint

EOS = 258


def _config(ck, db, **kw) -> ServeConfig:
    return ServeConfig(str(ck), f"sqlite:///{db}", **kw)


def _reference(ck, dtype, pieces: list[list[int]], n_new: int) -> tuple[list[int], object, torch.Tensor]:
    """One session served alone, by hand: each request's tokens fed in segments cut at
    multiples of the model's period, then greedy tokens one forward each."""
    model, _ = load_checkpoint(ck)
    model = model.to(dtype)
    period = model_period(model.config)
    state, logits, pos = None, None, 0
    with torch.no_grad():
        for toks in pieces:
            while toks:
                n = min(len(toks), period - pos % period)
                lg, state = model(torch.tensor([toks[:n]]), state)
                logits, pos, toks = lg[0, -1], pos + n, toks[n:]
        out = []
        for _ in range(n_new):
            t = int(logits.float().argmax())
            out.append(t)
            lg, state = model(torch.tensor([[t]]), state)
            logits = lg[0, -1]
            if t == EOS:  # the byte tokenizer's <eos>: generation stops after writing it
                break
    return out, state, logits


def _texts(n: int) -> list[str]:
    # different lengths: sessions end up at different positions and offsets
    return [("memory " * (i % 5 + 1)) + f"session {i} " + "x" * (i % 7) for i in range(n)]


def _assert_states_close(a, b, atol: float) -> None:
    ta, tb = [], []
    S._flatten(a, dict_a := {})
    S._flatten(b, dict_b := {})
    assert dict_a.keys() == dict_b.keys()
    for k in dict_a:
        ta.append(dict_a[k])
        tb.append(dict_b[k])
        if atol == 0:
            assert torch.equal(dict_a[k], dict_b[k]), k
        else:
            torch.testing.assert_close(dict_a[k], dict_b[k], atol=atol, rtol=0)


@pytest.mark.parametrize("kind,dtype,atol,schedule", [
    ("lmm", "float64", 1e-12, "continuous"), ("mac", "float64", 1e-12, "continuous"),
    ("mal", "float32", 1e-5, "continuous"), ("lmm", "float64", 1e-12, "waves")])
def test_batched_sessions_match_each_served_alone(tmp_path, kind, dtype, atol, schedule):
    ck = tiny_checkpoint(tmp_path, kind)
    tdtype = getattr(torch, dtype)
    # an untrained model's logits nearly tie: in float32 a last-bit difference may pick
    # another token, so float32 compares what the memories wrote, float64 also what they said
    n, n_new = 12, (6 if dtype == "float64" else 0)
    texts, prompts = _texts(n), [f" q{i}" for i in range(n)]
    with ThreadServer(_config(ck, tmp_path / "b.db", dtype=dtype, schedule=schedule)) as srv, srv.client() as c:
        for i in range(n):
            assert c.post("/v1/sessions", json={"id": f"s{i}"}).status_code == 201

        def one(i):
            with srv.client() as ci:
                assert ci.post(f"/v1/sessions/s{i}/append", json={"text": texts[i]}).status_code == 200
                r = ci.post(f"/v1/sessions/s{i}/generate", json={"prompt": prompts[i], "max_tokens": n_new})
                assert r.status_code == 200, r.text
                return r.json()["generated"], ci.get(f"/v1/sessions/s{i}/state").content

        with cf.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, range(n)))
        stats = srv.engine.stats()
    # requests that arrived together shared forwards
    assert stats["rows"] / stats["forwards"] > 1.2, stats
    fp = srv.engine.fingerprint
    for i, (gen, blob) in enumerate(results):
        ref_out, ref_state, ref_logits = _reference(ck, tdtype, [list(texts[i].encode()),
                                                                  list(prompts[i].encode())], n_new)
        assert gen == ref_out, i
        state, logits, tokens = S.decode(blob, fp)
        assert tokens == len(texts[i].encode()) + len(prompts[i].encode()) + len(gen)
        _assert_states_close(state, ref_state, atol)
        torch.testing.assert_close(logits, ref_logits, atol=atol, rtol=0)


def test_one_session_at_a_time_is_bit_for_bit_the_reference(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    with ThreadServer(_config(ck, tmp_path / "s.db", dtype="float64", batching=False)) as srv, srv.client() as c:
        c.post("/v1/sessions", json={"id": "a"})
        c.post("/v1/sessions/a/append", json={"text": "the quick brown fox"})
        gen = c.post("/v1/sessions/a/generate", json={"prompt": " jumps", "max_tokens": 5}).json()["generated"]
        state, logits, _ = S.decode(c.get("/v1/sessions/a/state").content, srv.engine.fingerprint)
    ref_out, ref_state, ref_logits = _reference(ck, torch.float64, [list(b"the quick brown fox"),
                                                                     list(b" jumps")], 5)
    assert gen == ref_out
    _assert_states_close(state, ref_state, 0)
    assert torch.equal(logits, ref_logits)


def test_requests_for_one_session_keep_their_order(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    with ThreadServer(_config(ck, tmp_path / "o.db", dtype="float64")) as srv:
        with srv.client() as c:
            c.post("/v1/sessions", json={"id": "a"})
        pieces = [[i % 250 + 1] * (i % 5 + 1) for i in range(20)]
        # many clients, one session: each request waits for the one before it
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            versions = []
            with cf.ThreadPoolExecutor(1) as pool:  # submitted in order, answered in order
                futs = [pool.submit(c.post, "/v1/sessions/a/append", json={"tokens": p}) for p in pieces]
                versions = [f.result().json()["version"] for f in futs]
            assert versions == list(range(2, 22))
            state, _, tokens = S.decode(c.get("/v1/sessions/a/state").content, srv.engine.fingerprint)
    assert tokens == sum(len(p) for p in pieces)
    _, ref_state, _ = _reference(ck, torch.float64, pieces, 0)
    _assert_states_close(state, ref_state, 1e-12)


def test_concurrent_writers_to_one_session_lose_nothing(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    with ThreadServer(_config(ck, tmp_path / "w.db")) as srv:
        with srv.client() as c:
            c.post("/v1/sessions", json={"id": "a"})

        def send(i):
            with srv.client() as ci:
                return ci.post("/v1/sessions/a/append", json={"tokens": [i + 1] * 3}).json()["version"]

        with cf.ThreadPoolExecutor(8) as pool:
            versions = sorted(pool.map(send, range(24)))
        with srv.client() as c:
            info = c.get("/v1/sessions/a").json()
    assert versions == list(range(2, 26))  # every write got its own version
    assert info["tokens"] == 72 and info["version"] == 25


def test_tenants_see_only_their_sessions(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    tokens = {"token-aaaaaaaa": "acme", "token-bbbbbbbb": "globex"}
    with ThreadServer(_config(ck, tmp_path / "t.db", tokens=tokens)) as srv:
        with srv.client("token-aaaaaaaa") as a, srv.client("token-bbbbbbbb") as b, srv.client() as anon:
            assert anon.get("/v1/sessions").status_code == 401
            assert srv.client("wrong-token").get("/v1/sessions").status_code == 401
            assert anon.get("/health").status_code == 200
            assert a.post("/v1/sessions", json={"id": "shared-name"}).status_code == 201
            a.post("/v1/sessions/shared-name/append", json={"text": "acme secret"})
            # the other tenant: same id, but nothing of acme's is reachable
            for r in (b.get("/v1/sessions/shared-name"), b.get("/v1/sessions/shared-name/state"),
                      b.post("/v1/sessions/shared-name/append", json={"text": "x"}),
                      b.post("/v1/sessions/shared-name/generate", json={"max_tokens": 2}),
                      b.post("/v1/sessions/shared-name/fork", json={"id": "stolen"}),
                      b.delete("/v1/sessions/shared-name")):
                assert r.status_code == 404, r.text
            assert b.get("/v1/sessions").json()["sessions"] == []
            assert b.post("/v1/sessions", json={"id": "shared-name"}).status_code == 201
            b.post("/v1/sessions/shared-name/append", json={"text": "globex"})
            assert a.get("/v1/sessions/shared-name").json()["tokens"] == len("acme secret")
            assert b.get("/v1/sessions/shared-name").json()["tokens"] == len("globex")


def test_bad_input_is_a_clear_4xx_and_others_keep_being_served(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    db = tmp_path / "bad.db"
    with ThreadServer(_config(ck, db, max_input_tokens=64)) as srv, srv.client() as c:
        c.post("/v1/sessions", json={"id": "good"})
        c.post("/v1/sessions", json={"id": "victim"})
        c.post("/v1/sessions/victim/append", json={"text": "hello"})
        cases = [
            (c.post("/v1/sessions", json={"id": "../etc"}), 400),
            (c.post("/v1/sessions", json={"id": "good"}), 409),
            (c.post("/v1/sessions/good/append", content=b"{not json"), 400),
            (c.post("/v1/sessions/good/append", json=[1, 2]), 400),
            (c.post("/v1/sessions/good/append", json={"tokens": ["a"]}), 400),
            (c.post("/v1/sessions/good/append", json={"tokens": [-1]}), 400),
            (c.post("/v1/sessions/good/append", json={"tokens": [1] * 65}), 400),
            (c.post("/v1/sessions/good/append", json={}), 400),
            (c.post("/v1/sessions/good/generate", json={"max_tokens": 10**9}), 400),
            (c.post("/v1/sessions/good/generate", json={"max_tokens": 3}), 400),  # nothing to continue
            (c.post("/v1/sessions/good/generate", json={"prompt": "x", "temperature": "hot"}), 400),
            (c.post("/v1/sessions/missing/append", json={"text": "x"}), 404),
            (c.put("/v1/sessions/good/state", content=b"garbage"), 400),
            (c.post("/v1/completions", json={"prompt": "x", "stream": True}), 400),
        ]
        for i, (r, status) in enumerate(cases):
            assert r.status_code == status, (i, r.text)
            assert r.json()["error"]["message"], i
        # a body announced as larger than the limit is refused before it is read
        import socket

        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"POST /v1/sessions/good/append HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n{")
            assert sock.recv(4096).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")
        # a stored state damaged behind the server's back
        srv.engine._entries.clear()  # nothing cached: the next request reads the store
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE lifelong_serve_sessions SET state = ?, version = version + 1 WHERE id = 'victim'",
                         (b"\x10\x00\x00\x00\x00\x00\x00\x00{broken",))
        r = c.post("/v1/sessions/victim/append", json={"text": "more"})
        assert r.status_code == 409 and "corrupt" in r.json()["error"]["message"]
        # the others are served; the damaged one can be restored from a copy
        ok = c.post("/v1/sessions/good/append", json={"text": "still here"})
        assert ok.status_code == 200 and ok.json()["tokens"] == 10
        copy = c.get("/v1/sessions/good/state").content
        assert c.put("/v1/sessions/victim/state", content=copy).status_code == 200
        assert c.post("/v1/sessions/victim/append", json={"text": "!"}).json()["tokens"] == 11
        # a well-formed state of the wrong shape: refused when used, the others unharmed
        state, logits, ntok = S.decode(copy, srv.engine.fingerprint)
        mem = state[0][0]
        bad = S.encode([[dataclasses.replace(mem, weights=tuple(w[..., :1] for w in mem.weights))],
                        *state[1:]], logits, ntok, srv.engine.fingerprint)
        assert c.put("/v1/sessions/odd/state", content=bad).status_code == 200
        with cf.ThreadPoolExecutor(2) as pool:
            r_odd, r_good = pool.map(lambda sid: c.post(f"/v1/sessions/{sid}/append", json={"text": "zz"}),
                                     ["odd", "good"])
        assert r_odd.status_code == 409 and "cannot be read" in r_odd.json()["error"]["message"]
        assert r_good.status_code == 200


def test_fork_restore_delete_and_openai_completions(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    with ThreadServer(_config(ck, tmp_path / "f.db", dtype="float64")) as srv, srv.client() as c:
        c.post("/v1/sessions", json={"id": "a"})
        c.post("/v1/sessions/a/append", json={"text": "a shared past"})
        assert c.post("/v1/sessions/a/fork", json={"id": "b"}).status_code == 201
        ga = c.post("/v1/sessions/a/generate", json={"prompt": " then", "max_tokens": 4}).json()
        gb = c.post("/v1/sessions/b/generate", json={"prompt": " then", "max_tokens": 4}).json()
        assert ga["generated"] == gb["generated"] and ga["tokens"] == gb["tokens"]
        snap = c.get("/v1/sessions/a/state")
        c.post("/v1/sessions/a/append", json={"text": " and later"})
        assert c.put("/v1/sessions/a/state", content=snap.content).json()["tokens"] == ga["tokens"]
        back = S.decode(c.get("/v1/sessions/a/state").content, srv.engine.fingerprint)
        orig = S.decode(snap.content, srv.engine.fingerprint)
        _assert_states_close(back[0], orig[0], 0)
        assert torch.equal(back[1], orig[1]) and back[2] == orig[2]
        # OpenAI completions: the session rides along in the body or a header
        body = {"model": srv.name, "prompt": " then", "max_tokens": 4, "session": "c"}
        r = c.post("/v1/completions", json=body).json()
        assert r["object"] == "text_completion" and r["usage"]["completion_tokens"] == 4
        r2 = c.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2},
                    headers={"X-Lifelong-Session": "c"}).json()
        assert c.get("/v1/sessions/c").json()["tokens"] == 5 + 4 + 3 + 2 and r2["usage"]["prompt_tokens"] == 3
        assert c.delete("/v1/sessions/b").status_code == 200
        assert c.get("/v1/sessions/b").status_code == 404
        assert [s["id"] for s in c.get("/v1/sessions").json()["sessions"]] == ["a", "c"]


def test_idle_sessions_are_evicted_and_reloaded_unchanged(tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    with ThreadServer(_config(ck, tmp_path / "e.db", dtype="float64", memory_budget_mb=0.02)) as srv:
        with srv.client() as c:
            for i in range(6):
                c.post("/v1/sessions", json={"id": f"s{i}"})
                c.post(f"/v1/sessions/s{i}/append", json={"text": f"text of session {i}"})
            gens = [c.post(f"/v1/sessions/s{i}/generate", json={"max_tokens": 4}).json()["generated"]
                    for i in range(6)]
            stats = srv.engine.stats()
    assert stats["evictions"] > 0 and stats["reloads"] > 0
    assert stats["state_bytes_loaded"] <= 0.02 * (1 << 20) + 20000
    for i in range(6):
        ref, _, _ = _reference(ck, torch.float64, [list(f"text of session {i}".encode())], 4)
        assert gens[i] == ref


def test_optimistic_versions_in_the_store(tmp_path):
    store = SessionStore(f"sqlite:///{tmp_path / 'v.db'}", "fp")
    blob = S.encode(None, None, 0, "fp")
    assert store.write_many([Write("t", "a", blob, 0, 0)]) == [1]
    assert isinstance(store.write_many([Write("t", "a", blob, 0, 0)])[0], Conflict)  # exists
    assert store.write_many([Write("t", "a", blob, 1, 1)]) == [2]
    stale, fresh = store.write_many([Write("t", "a", blob, 5, 1), Write("t", "b", blob, 0, 0)])
    assert isinstance(stale, Conflict) and fresh == 1  # one stale write refuses only itself
    assert store.get("t", "a").tokens == 1 and store.get("u", "a") is None
    store.close()


def test_two_servers_share_one_store(tmp_path):
    """Two processes' worth of servers behind a balancer: each write lands on the newest version."""
    ck = tiny_checkpoint(tmp_path, "lmm")
    db = tmp_path / "shared.db"
    with ThreadServer(_config(ck, db)) as s1, ThreadServer(_config(ck, db)) as s2, \
            s1.client() as c1, s2.client() as c2:
        c1.post("/v1/sessions", json={"id": "a"})
        for i in range(6):
            (c1 if i % 2 else c2).post("/v1/sessions/a/append", json={"tokens": [i + 1] * 2})
        assert c1.get("/v1/sessions/a").json() == c2.get("/v1/sessions/a").json()
        assert c2.get("/v1/sessions/a").json()["tokens"] == 12


def _start_subprocess(ck, store_url: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "lifelong", "serve", str(ck), "--store", store_url,
                             "--port", str(port), "--dtype", "float64", "--threads", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_acknowledged_writes_survive_kill_9(tmp_path, backend, request):
    ck = tiny_checkpoint(tmp_path, "lmm")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'k.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    port = free_port()
    proc = _start_subprocess(ck, url, port)
    acked: dict[str, int] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            for i in range(4):
                c.post("/v1/sessions", json={"id": f"s{i}"})

            def hammer(i):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as ci:
                    for j in range(1000):
                        try:
                            r = ci.post(f"/v1/sessions/s{i}/append", json={"tokens": [j % 200 + 1] * 3})
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            acked[f"s{i}"] = r.json()["tokens"]

            with cf.ThreadPoolExecutor(4) as pool:
                futs = [pool.submit(hammer, i) for i in range(4)]
                time.sleep(2.0)
                os.kill(proc.pid, signal.SIGKILL)  # mid-flight: no shutdown, no flush
                proc.wait(timeout=10)
                for f in futs:
                    f.result()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) == 4 and all(v > 0 for v in acked.values())
    proc = _start_subprocess(ck, url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            for sid, n in acked.items():
                info = c.get(f"/v1/sessions/{sid}").json()
                # every acknowledged append is there (one more may have committed unanswered)
                assert info["tokens"] in (n, n + 3), (sid, info, n)
                state = c.get(f"/v1/sessions/{sid}/state")
                assert state.status_code == 200
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_one_token_at_any_offset_is_bit_for_bit_the_plain_step(tmp_path):
    """Decoding sessions at different offsets in one forward sets each memory's pending tokens
    aside: for a single session that must be exactly the plain step (float64, bit for bit)."""
    ck = tiny_checkpoint(tmp_path, "lmm")
    model, _ = load_checkpoint(ck)
    model = model.double()
    torch.manual_seed(1)
    with torch.no_grad():
        for n in range(1, 12):
            _, state = model(torch.randint(0, 256, (1, n)))
            tok = torch.randint(0, 256, (1, 1))
            if not S.one_token_any_offset(state):
                assert n % 4 == 3  # the token completes a chunk: not eligible
                continue
            want_logits, want = model(tok, state)
            got_logits, got = model(tok, S.strip_pending(state))
            got = S.restore_pending(state, got)
            assert torch.equal(got_logits, want_logits)
            _assert_states_close(got, want, 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_short_pieces_take_the_whole_batch_bit_for_bit(dtype):
    """ConvSiluNorm's batched path for short pieces (serving) is exactly its per-row loop."""
    from lifelong.neural.memory.fused import _SHORT, ConvSiluNorm

    torch.manual_seed(0)
    B, H, d, K = 7, 4, 16, 4
    for T in (1, 3, _SHORT):
        for norm_values in (False, True):
            cache = torch.randn(B, K - 1, 3 * H * d, dtype=dtype)
            raw = torch.randn(B, T, 3 * H * d, dtype=dtype)
            w = torch.randn(3 * H * d, K, dtype=dtype)
            whole = ConvSiluNorm.apply(cache, raw, w, H, norm_values)
            for i in range(B):  # a batch of one takes the per-row loop
                alone = ConvSiluNorm.apply(cache[i : i + 1], raw[i : i + 1], w, H, norm_values)
                for a, b in zip(whole, alone):
                    assert torch.equal(a[i : i + 1], b), (T, norm_values, i)


def test_state_bytes_are_what_safetensors_reads_and_rows_restack_without_a_copy():
    from safetensors.torch import load, save

    tensors = {"a": torch.randn(2, 3, dtype=torch.float64), "b": torch.arange(5), "c": torch.zeros(1, 0, 4),
               "d": torch.randn(3).to(torch.bfloat16), "e": torch.tensor([True, False]),
               "f": torch.randn(4, 6)[:, 1:3]}  # not contiguous
    meta = {"k": "v", "structure": "[1, 2]"}
    mine, theirs = load(S.safetensors_bytes(tensors, meta)), load(save({k: v.contiguous() for k, v in tensors.items()}))
    assert mine.keys() == theirs.keys() == tensors.keys()
    for k in tensors:
        assert mine[k].dtype == tensors[k].dtype and torch.equal(mine[k], theirs[k]), k
    assert S._metadata(S.safetensors_bytes(tensors, meta)) == meta
    # rows split as views of one batch, all back together in order: the batch itself
    ck_model = torch.randn(4, 3, 5)
    state = [{"w": ck_model, "x": ck_model * 2}]
    rows = S.split(state, 4, copy=False)
    again = S.stack(rows)
    assert again[0]["w"] is ck_model
    shuffled = S.stack([rows[i] for i in (1, 0, 2, 3)])  # another order: a real copy
    assert torch.equal(shuffled[0]["w"], ck_model[[1, 0, 2, 3]])
    assert torch.equal(S.stack(rows[:3])[0]["x"], (ck_model * 2)[:3])
    compacted = S.compact(rows[2])
    assert compacted[0]["w"].untyped_storage().nbytes() == 3 * 5 * 4
    assert torch.equal(compacted[0]["w"], ck_model[2:3])


@pytest.mark.slow
def test_soak_with_random_kills_loses_no_acknowledged_write(tmp_path):
    """A bounded soak: random appends and generates on 4 sessions while the server is killed
    (SIGKILL) and restarted; every acknowledged write is there and every state is its own."""
    from lifelong.serve.memory.soak import soak

    ck = tiny_checkpoint(tmp_path, "lmm")
    r = soak(str(ck), f"sqlite:///{tmp_path / 's.db'}", seconds=10, sessions=4, kill_every=(1.0, 2.5),
             seed=3, workdir=str(tmp_path / "w"))
    assert r.kills >= 1 and r.requests_acked >= 20, r
    assert r.ok, r.events
    assert r.acked_writes_lost == 0 and r.state_mismatches == 0 and r.version_errors == 0


@pytest.mark.slow
def test_two_server_processes_share_one_postgres_store(tmp_path, postgres_server):
    """Two real server processes on one PostgreSQL store, one session written through both at
    once: every acknowledged append has its own version, a write based on a version the other
    server has since replaced is refused (409), and the stored state is the replay of the
    acknowledged appends in version order (no lost update)."""
    ck = tiny_checkpoint(tmp_path, "lmm")
    url = postgres_server.new_database()
    ports = [free_port(), free_port()]
    procs = [_start_subprocess(ck, url, p) for p in ports]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30) as c:
            assert c.post("/v1/sessions", json={"id": "shared"}).status_code == 201
        acked: dict[int, list[int]] = {}
        refused = [0]

        def writer(k: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[k % 2]}", timeout=30) as ci:
                for j in range(12):
                    toks = [(k * 40 + j) % 250 + 1] * (1 + (j + k) % 5)
                    r = ci.post("/v1/sessions/shared/append", json={"tokens": toks})
                    if r.status_code == 200:
                        v = r.json()["version"]
                        assert v not in acked, (v, "two acknowledged writes got one version")
                        acked[v] = toks
                    else:
                        assert r.status_code == 409, r.text
                        assert "changed" in r.json()["error"]["message"]
                        refused[0] += 1

        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(writer, range(4)))
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=30) as c:
            info = c.get("/v1/sessions/shared").json()
            blob = c.get("/v1/sessions/shared/state").content
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
    versions = sorted(acked)
    assert versions == list(range(2, 2 + len(acked))), versions  # 1 = create; no gap, no repeat
    assert info["version"] == versions[-1]
    assert info["tokens"] == sum(len(t) for t in acked.values())
    assert refused[0] > 0  # the servers did race: stale writes were refused, not applied
    _, ref_state, ref_logits = _reference(ck, torch.float64, [acked[v] for v in versions], 0)
    model, _ = load_checkpoint(ck)
    state, logits, _ = S.decode(blob, model.fingerprint())
    _assert_states_close(state, ref_state, 1e-12)
    torch.testing.assert_close(logits, ref_logits.double(), atol=1e-12, rtol=0)
