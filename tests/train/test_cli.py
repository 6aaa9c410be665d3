"""``lifelong consolidate --into-weights`` and ``lifelong adapter …`` as a user runs them,
on the tiny reader model (tiny_reader.py) through the console entry point."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from tests.train.tiny_reader import note, question


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, tiny_dir):
    from lifelong.cli.main import main

    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFELONG_STORE", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("LIFELONG_MODEL", f"hf:{tiny_dir}")
    monkeypatch.delenv("LIFELONG_NAMESPACE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        out, err = " ".join(out.split()), " ".join(err.split())  # rich wraps at the terminal width
        code = exit_.value.code or 0
        assert (code == 0) == ok, out + err
        return subprocess.CompletedProcess(args, code, out, err)

    yield run
    torch.set_num_threads(threads)


def test_consolidate_into_weights_from_the_shell(cli, tiny_dir, tmp_path):
    cli("notes", "add", note("blue", "tulip"), "-n", "acme")
    # a session with the note in context: it answers, and its task is recorded
    out = cli("run", question("blue"), "--expect", "tulip", "--no-reflect", "-n", "acme").stdout
    assert "answer: tulip" in out and "score: 1" in out

    out = cli("consolidate", "--into-weights", "--retire", "--epochs", "12", "--lr", "5e-3",
              "-n", "acme").stdout
    assert "adapter v1: 1 notes" in out and "'task': 1" in out  # the recorded task was used
    assert "retired note [1]" in out and "?adapter=acme" in out
    assert cli("notes", "render", "-n", "acme").stdout == ""  # the block is empty now

    spec = f"hf:{tiny_dir}?adapter=acme"
    out = cli("run", question("blue"), "--expect", "tulip", "--no-reflect", "-n", "acme", "-m", spec).stdout
    assert "answer: tulip" in out and "score: 1" in out  # from the weights alone

    listing = cli("adapter", "list", "-n", "acme").stdout
    assert "1 * " in listing or "│ 1 │ * " in listing
    out = cli("adapter", "export", str(tmp_path / "exported"), "-n", "acme").stdout
    assert (tmp_path / "exported" / "adapter_model.safetensors").is_file() and "exported to" in out

    # nothing new: said so, nothing trained
    assert "nothing new" in cli("consolidate", "--into-weights", "-n", "acme").stdout
    out = cli("adapter", "use", "none", "-n", "acme").stdout
    assert "restored note [1]" in out
    assert "The code of blue is tulip." in cli("notes", "render", "-n", "acme").stdout


def test_consolidate_into_weights_refuses_what_it_cannot_do(cli):
    err = cli("consolidate", "--into-weights", "-n", "empty", ok=False).stderr
    assert "no store at" in err and "Traceback" not in err  # nothing stored yet: a message
    cli("notes", "add", note("red", "maple"), "-n", "acme")
    err = cli("consolidate", "--into-weights", "-n", "empty", ok=False).stderr
    assert "namespace 'empty'" in err  # unknown namespace: a message, no traceback
    err = cli("consolidate", "--into-weights", "-n", "acme", "-m", "local", ok=False).stderr
    assert "transformers backend" in err and "hf:local" in err
    err = cli("consolidate", "--into-weights", "-n", "acme", "--objective", "sft", ok=False).stderr
    assert "unknown objective" in err
    err = cli("adapter", "use", "3", "-n", "acme", ok=False).stderr
    assert "no adapter version 3" in err
    assert "Traceback" not in err
