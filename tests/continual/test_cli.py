"""``lifelong bench continual``: wrong arguments are one clear sentence, before any model loads."""

from __future__ import annotations

import pytest

from lifelong.cli.main import main


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-stream"], "unknown stream 'no-such-stream'"),
    (["class-incremental", "--seeds", "0,x"], "bad --seeds '0,x'"),
    (["class-incremental", "--seeds", ","], "no seeds given"),
    (["class-incremental", "--learners", "icl,hope"], "unknown learner hope"),
    (["novel-translation", "--option", "colour=3"], "bad option for stream"),
    (["novel-translation", "--option", "script=runes"], "unknown script 'runes'"),
    (["class-incremental", "--option", "tasks=10", "--option", "classes=5"], "topics"),
    (["class-incremental", "--option", "tasks=40"], "tasks must be a whole number in [1, 30]"),
])
def test_bad_arguments_are_clear_errors(args, message, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LIFELONG_MODEL", "llamacpp:/nonexistent.gguf")  # would fail if it loaded
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "continual", *args, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exit_.value.code != 0
    assert message in " ".join(err.split())
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()
