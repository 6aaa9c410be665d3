"""``lifelong bench memory --capacity``: the rows it reports, and bad options refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lifelong.errors import ConfigError


def test_capacity_command_reports_both_rules(tmp_path):
    from lifelong.cli.main import app

    out = tmp_path / "capacity.json"
    result = CliRunner().invoke(app, [
        "bench", "memory", "--capacity", "--quick", "--depths", "2", "--chunks", "4",
        "--trials", "2", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    rows = {r["update"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bounded", "paper"}
    bounded, paper = rows["bounded"], rows["paper"]
    assert bounded["depth"] == 2 and bounded["chunk"] == 4 and bounded["max_lr"] == 0.5
    assert 0.5 < bounded["removed"] < 1.0 and bounded["removed_min"] <= bounded["removed"]
    assert bounded["finite"] == {"init": 2048, "stress": 2048}  # the whole (quick) stream
    # the paper's rule at its default bound: its most aggressive gates overflow early
    assert paper["finite"]["stress"] < 2048
    assert "bounded_depth2_best=" in result.output.splitlines()[-1]


@pytest.mark.parametrize("args,needle", [
    (["--chunks", "4,x"], "--chunks"),
    (["--depths", "0"], "--depths"),
    (["--updates", "delta"], "--updates"),
    (["--value-norm", "maybe"], "--value-norm"),
    (["--trials", "0"], "--trials"),
])
def test_capacity_command_refuses_bad_options(args, needle):
    from lifelong.cli.main import app

    result = CliRunner().invoke(app, ["bench", "memory", "--capacity", "--quick", *args])
    # the CLI's entry point prints a ConfigError as "error: … / what to do: …", no traceback
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert needle in result.exception.message and result.exception.hint
