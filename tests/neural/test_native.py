"""The native CPU chunk loop against the eager one, and its fallback.

The eager loop is itself held to the float64 naive reference (test_memory.py,
which runs its reference tests on both). Here the two are compared directly on
shapes the model tests do not reach: several threads splitting an odd number
of memories, non-contiguous inputs, outputs left out of the loss, inference
without saving, and depths 1–3.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest
import torch

from lifelong.neural.memory import native
from lifelong.neural.memory.chunk_loop import chunk_loop


@pytest.fixture
def ext():
    module = native.load()
    assert module is not None, f"the native chunk loop did not build: {native.error()}"
    return module


def _inputs(N, n, b, dims, dtype):
    def rand(*shape, scale=1.0):
        return torch.randn(*shape, dtype=dtype) * scale

    T = n * b
    # q, k, v as column slices of wider tensors: non-contiguous, as in the model
    q, k, v = (rand(N, T + 3, dims[0], scale=0.5)[:, 2 : T + 2] for _ in range(3))
    two_theta = torch.rand(N, n, b, 1, dtype=dtype) * 0.2
    keep = 0.8 + 0.2 * torch.rand(N, n, dtype=dtype)
    eta = 0.9 * torch.rand(N, n, dtype=dtype)
    W = [rand(N, dims[l], dims[l + 1], scale=dims[l] ** -0.5) for l in range(len(dims) - 1)]
    S = [rand(N, dims[l], dims[l + 1], scale=0.1) for l in range(len(dims) - 1)]
    return [q, k, v, two_theta, keep, eta, *W, *S]


def _run(inputs, on, weights_in_loss, momenta_in_loss, y_in_loss):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    with native.use(on):
        y, *WS = chunk_loop(True, *leaves)
    L = len(WS) // 2
    gen = torch.Generator().manual_seed(1234)  # the same loss weights for every run

    def weights(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)

    loss = (weights(y) * y).sum() if y_in_loss else 0  # else: no gradient for y
    if weights_in_loss:
        loss = loss + sum((weights(w) * w).sum() for w in WS[:L])
    if momenta_in_loss:
        loss = loss + sum(s.pow(2).sum() for s in WS[L:])
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [y, *WS], grads


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_equals_eager_float64(ext, depth, threads):
    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    print(f"seed={seed}")
    N, n, b = 5, 4, 6  # 5 memories over 3 threads: uneven shares
    dims = [4] + [7] * (depth - 1) + [4]
    inputs = _inputs(N, n, b, dims, torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for flags in [(True, True, True), (True, False, False), (False, True, True), (False, False, True)]:
            out_n, g_n = _run(inputs, True, *flags)
            out_e, g_e = _run(inputs, False, *flags)
            for a, c in zip(out_n, out_e):
                torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)
            for a, c in zip(g_n, g_e):
                if c is None:
                    assert a is None or not a.abs().max() > 0
                else:
                    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_num_threads(before)


def test_native_float32_matches_float64(ext):
    torch.manual_seed(random.randrange(2**31))
    inputs = _inputs(3, 5, 8, [6, 12, 6], torch.float64)
    out64, g64 = _run(inputs, True, True, True, True)
    out32, g32 = _run([t.float() for t in inputs], True, True, True, True)
    for a, c in zip(out32 + list(g32), out64 + list(g64)):
        torch.testing.assert_close(a.double(), c, rtol=1e-4, atol=1e-5)


def test_inference_without_saving_gives_the_same_outputs(ext):
    torch.manual_seed(random.randrange(2**31))
    inputs = _inputs(4, 5, 3, [4, 8, 4], torch.float64)
    with native.use(True):
        kept = chunk_loop(True, *inputs)
        with torch.no_grad():
            ring = chunk_loop(False, *inputs)  # a ring of two chunks' buffers
    for a, c in zip(kept, ring):
        assert torch.equal(a, c)


def test_disabled_by_environment_and_fallback_warns(tmp_path):
    code = (
        "import warnings, torch\n"
        "from lifelong.neural import NeuralMemory, NeuralMemoryConfig\nfrom lifelong.neural.memory import native\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    m = NeuralMemory(NeuralMemoryConfig(dim=8, heads=2, head_dim=4, chunk_size=2), seed=0)\n"
        "    y, _ = m(torch.randn(1, 6, 8))\n"
        "print('module', native.load() is not None, 'error', native.error() is not None,\n"
        "      'warned', any('could not be built' in str(x.message) for x in w), 'finite', bool(y.isfinite().all()))\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    off = subprocess.run([sys.executable, "-c", code], env=dict(env, LIFELONG_NATIVE="0"),
                         capture_output=True, text=True, timeout=300)
    assert off.returncode == 0, off.stderr
    assert "module False error False warned False finite True" in off.stdout
    # a compiler that fails: one warning that says what to do, then the eager loop
    broken = subprocess.run([sys.executable, "-c", code], env=dict(env, CXX="false"),
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode == 0, broken.stderr
    assert "module False error True warned True finite True" in broken.stdout


def test_a_lock_left_by_a_killed_build_does_not_hang_later_loads(ext, tmp_path):
    # torch's build lock is a plain file: a build killed half-way leaves it, and
    # torch alone would wait for it forever on every later load (of a finished build too)
    name = native._name()[0]
    root = tmp_path / "ext"
    shutil.copytree(native._build_directory(name), root / name)  # the finished build, timestamps kept
    (root / name / "lock").touch()
    code = "from lifelong.neural.memory import native\nprint('loaded', native.load() is not None)\n"
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TORCH_EXTENSIONS_DIR=str(root)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "loaded True" in done.stdout
    assert "removed a lock left by an interrupted build" in done.stderr
    assert not (root / name / "lock").exists()
