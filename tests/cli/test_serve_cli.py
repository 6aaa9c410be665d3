"""``lifelong serve`` refuses bad arguments with a message, never a traceback."""

from __future__ import annotations

from tests.serve.memory_server import free_port, tiny_checkpoint


def test_serve_refuses_bad_arguments(cli, tmp_path):
    ck = tiny_checkpoint(tmp_path, "lmm")
    store = f"sqlite:///{tmp_path / 's.db'}"
    port = str(free_port())
    r = cli("serve", str(ck), "--store", store, "--port", port, "--token", "acme:short", ok=False)
    assert "TENANT:TOKEN" in r.stderr and "Traceback" not in r.stderr
    r = cli("serve", str(ck), "--store", store, "--port", port, "--schedule", "sometimes", ok=False)
    assert "unknown schedule" in r.stderr and "Traceback" not in r.stderr
    r = cli("serve", str(ck), "--port", port, "--store", "mysql://x/y", ok=False)
    assert "unsupported store URL" in r.stderr
    r = cli("serve", str(tmp_path / "nothing-here"), "--port", port, "--store", store, ok=False)
    assert "Traceback" not in r.stderr and r.stderr.strip()
