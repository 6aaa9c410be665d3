"""The neural memory's native CPU chunk loop: build on first use, fall back cleanly.

``csrc/chunk_loop.cpp`` runs the default inner loop (chunk gates with momentum)
one memory per thread, forward and outer backward, with the elementwise steps
fused and each memory's weights kept in cache. It is compiled on first use with
``torch.utils.cpp_extension`` (a C++ compiler and ``ninja`` are needed; the
build takes about 40 s and is cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). Where it cannot be built the memory runs the
same arithmetic in eager PyTorch, after one warning.

``LIFELONG_NATIVE=0`` turns it off; :func:`use` switches it within a block.

A build killed half-way (kill -9, a CI timeout) leaves torch's lock file behind,
and torch then waits for it forever, on every later load. The load therefore
holds an operating-system lock of its own (released by the kernel when its
holder dies) and clears any lock file it finds while holding it: whoever made
that file is no longer building.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

_SOURCE = Path(__file__).with_name("csrc") / "chunk_loop.cpp"
_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_enabled = os.environ.get("LIFELONG_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _flags() -> tuple[str, list[str]]:
    """The build's name suffix and compiler flags for this CPU.

    ``-ffast-math`` is a compile flag only (never a link flag, so the process's
    floating-point mode is untouched); it lets the compiler call glibc's vector
    ``exp`` in the SiLU pass."""
    flags = ["-O3", "-fopenmp", "-ffast-math"]
    capability = torch.backends.cpu.get_cpu_capability()  # DEFAULT, AVX2, AVX512, …
    if platform.machine().lower() in ("x86_64", "amd64") and capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return capability.lower(), flags


def _build_directory(name: str) -> Path | None:
    """Torch's build folder for this extension (None if torch's helper moved)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


@contextlib.contextmanager
def _exclusive(build_dir: Path | None) -> Iterator[None]:
    """Hold the build folder's lock for one build or load; clear a stale torch lock.

    ``fcntl.flock`` is released when its holder exits, however it exits, so a
    second process waits only while the first is really building. Every lifelong
    build holds it around torch's own lock, so a torch ``lock`` file seen while
    holding it was left by a build that died."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock only
        fcntl = None
    if build_dir is None or fcntl is None:
        yield
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "lifelong.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = build_dir / "lock"
            if stale.exists():
                stale.unlink(missing_ok=True)
                print("lifelong: removed a lock left by an interrupted build of the native chunk loop",
                      file=sys.stderr, flush=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _built(name: str) -> bool:
    """Whether torch's extension cache already holds this build (only to decide
    whether to announce a compile)."""
    build_dir = _build_directory(name)  # a private helper of torch's: if it moves, just announce
    return build_dir is not None and any(build_dir.glob(f"{name}*.so"))


def _name() -> tuple[str, list[str]]:
    """The build's name (it keys torch's build cache: a new source, CPU flags or torch
    version builds anew) and its compiler flags."""
    suffix, flags = _flags()
    digest = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:10]
    return f"lifelong_chunk_loop_{suffix}_{digest}", flags


def needs_build() -> bool:
    """Whether the first :func:`load` will compile (a command says so before it starts)."""
    return _enabled and _module is None and _error is None and not _built(_name()[0])


def load() -> ModuleType | None:
    """The compiled extension, building it on first call; None where it cannot be
    built (the reason is in :func:`error`) or is turned off."""
    global _module, _error
    if not _enabled:
        return None
    if _module is not None or _error is not None:
        return _module
    with _lock:
        if _module is not None or _error is not None:
            return _module
        name, flags = _name()
        if not _built(name):
            print("lifelong: compiling the native CPU chunk loop of the neural memory "
                  "(once per machine, about a minute)", file=sys.stderr, flush=True)
        try:
            from torch.utils.cpp_extension import load as build

            with _exclusive(_build_directory(name)):
                _module = build(name=name, sources=[str(_SOURCE)], extra_cflags=flags, verbose=False)
        except Exception as exc:  # no compiler, no ninja, no BLAS symbols: run eager
            _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            warnings.warn(
                "lifelong: the native CPU chunk loop could not be built, so the neural memory "
                f"runs in eager PyTorch (same results, slower). Reason: {_error}. "
                "Install a C++ compiler (e.g. apt-get install g++) and `pip install ninja`, "
                "or set LIFELONG_NATIVE=0 to skip the build and this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
        return _module


def error() -> str | None:
    """Why the extension could not be built, if it could not."""
    return _error


@contextlib.contextmanager
def use(flag: bool) -> Iterator[None]:
    """Turn the native loop on or off within a block (for tests and comparisons)."""
    global _enabled
    before, _enabled = _enabled, flag
    try:
        yield
    finally:
        _enabled = before
