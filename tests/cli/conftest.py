"""The command line as a newcomer meets it: in this process through the same
``main`` the console script calls (the embedded model then loads once), and
as a real process at 80 columns where the terminal's width matters."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data folder; the model caches stay where they are."""
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("LIFELONG_STORE", "LIFELONG_NAMESPACE", "LIFELONG_DOCS", "LIFELONG_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


@pytest.fixture
def cli(home, monkeypatch, capsys):
    """``cli(*args, ok=True, stdin="")`` → CompletedProcess with exit code, stdout, stderr."""
    from lifelong.cli.main import main

    def run(*args: str, ok: bool | None = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``ok=None``: either exit code is fine (the test looks at it)."""
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        err = " ".join(err.split())  # rich wraps messages at the terminal width
        code = exit_.value.code or 0
        assert ok is None or (code == 0) == ok, out + err
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture
def shell(home):
    """``shell(*args)``: ``python -m lifelong ARGS`` as a real process at COLUMNS=80."""

    def run(*args: str, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "80", "LIFELONG_HOME": str(home)}
        proc = subprocess.run([sys.executable, "-m", "lifelong", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        return proc

    return run
