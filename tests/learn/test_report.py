"""Reports and the CLI's error paths (runs made with the scripted session)."""

from __future__ import annotations

import json
import re
import struct

import pytest

from lifelong.cli.main import main
from lifelong.errors import NotFoundError
from lifelong.learn.protocol import Protocol, ProtocolConfig, read_jsonl
from lifelong.learn.report import FINAL_LINE_RE, final_line, find_runs, summarize, write_report
from lifelong.learn.strategies import get_strategy, strategy_names
from lifelong.learn.suites import load_suite

from .scripted import ScriptedLLM, ScriptedSession


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every built-in strategy, written as two separate output folders."""
    root = tmp_path_factory.mktemp("runs")
    config = ProtocolConfig(episodes=3, readers=3, seed=1)
    for i, name in enumerate(strategy_names()):
        Protocol(ScriptedLLM(), load_suite("procedure", 1), get_strategy(name), config,
                 root / ("a" if i % 2 else "b"), session_factory=ScriptedSession).run()
    return root


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_summary_figures_match_the_log(runs):
    records = read_jsonl(runs / "b" / "full" / "sessions.jsonl")
    s = summarize(records)
    readers = [r for r in records if r["type"] == "session" and r["role"] == "reader"]
    sim = [r["score"] for r in readers if r["relation"] == "similar"]
    assert s["similar"] == pytest.approx(sum(sim) / len(sim))
    assert s["n_similar"] == len(sim) and s["readers"] == 9 and s["episodes"] == 3
    episodes = [r for r in records if r["type"] == "episode"]
    assert s["reward"] == pytest.approx(sum(e["reward"] for e in episodes) / 3)
    assert s["final_note_tokens"] == episodes[-1]["note_tokens"]
    line = final_line(s)
    assert re.fullmatch(FINAL_LINE_RE, line)
    assert line.startswith(f"reward={s['reward']:.3f} similar={s['similar']:.3f} ")


def test_report_puts_all_strategies_side_by_side(runs, tmp_path):
    assert list(find_runs([runs / "a", runs / "b"])) == strategy_names()
    report = write_report([runs / "a", runs / "b"], tmp_path / "report")
    assert [s["strategy"] for s in report["summaries"]] == strategy_names()
    for name, path in report["plots"].items():
        width, height = png_size(path.read_bytes())
        assert width > 300 and height > 200, name
    page = report["html"].read_text()
    for name in strategy_names():
        assert f"<td>{name}</td>" in page
    assert page.count("data:image/png;base64,") == 4
    # The memory the last writer left is shown, so a person can read what was learned.
    notes = summarize(read_jsonl(runs / "b" / "full" / "sessions.jsonl"))
    assert notes["final_note_tokens"] > 0
    last_writer = [r for r in read_jsonl(runs / "b" / "full" / "sessions.jsonl")
                   if r["type"] == "session" and r["role"] == "writer"][-1]
    assert last_writer["transcript"][-1]["content"] in page
    saved = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [s["strategy"] for s in saved] == strategy_names()


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="no run logs"):
        write_report([tmp_path], tmp_path / "r")
    with pytest.raises(NotFoundError, match="no output folder"):
        write_report([tmp_path / "missing"], tmp_path / "r")


@pytest.mark.parametrize("columns", [80, 60])
def test_the_summary_table_fits_the_terminal_and_never_cuts_a_label(runs, tmp_path, capsys, monkeypatch,
                                                                   columns):
    from lifelong.learn.report import TABLE_ROWS

    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit):
        main(["learn", "report", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    table = out.split("report:")[0]
    assert max(len(line) for line in table.splitlines()) <= columns
    assert "…" not in table  # nothing cut, not a label, not a value
    for _, label, _ in TABLE_ROWS:
        assert any(line.startswith(label + " ") for line in table.splitlines()), label
    for name in strategy_names():  # every strategy heads a column, in some table
        assert re.search(rf"\b{name}\b", table)
    full = summarize(read_jsonl(runs / "b" / "full" / "sessions.jsonl"))
    row = next(line for line in table.splitlines() if line.startswith("reward "))
    assert f"{full['reward']:.3f}" in row or columns < 80


def test_cli_report_prints_one_line_per_strategy(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["learn", "report", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "r")])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip().splitlines()
    tail = out[-len(strategy_names()):]
    for name, line in zip(strategy_names(), tail, strict=True):
        prefix, _, rest = line.partition(": ")
        assert prefix == name and re.fullmatch(FINAL_LINE_RE, rest)
    assert (tmp_path / "r" / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "nope"], "unknown suite 'nope'"),
        (["--strategy", "psychic"], "unknown strategy 'psychic'"),
        (["--p-same", "0.5"], "must be >= 0 and sum to 1"),
    ],
)
def test_cli_eval_bad_input_is_one_clear_error(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["learn", "eval", "--out", str(tmp_path), *args])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_cli_eval_malformed_task_file_names_the_task(tmp_path, capsys):
    path = tmp_path / "acme.jsonl"
    path.write_text(json.dumps({"id": "t1", "prompt": "P", "answer": "A"}) + "\n"
                    + json.dumps({"id": "t2", "prompt": "P"}) + "\n")
    with pytest.raises(SystemExit):
        main(["learn", "eval", "--suite", str(path), "--out", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert "acme.jsonl:2 (task 't2'): 'answer' must be" in err


def _legend_is_beside(fig, ax) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_plots_say_when_lines_coincide_show_every_bar_and_keep_legends_off_the_data(runs):
    from lifelong.learn.report import (
        _reader_scores,
        draw_learning_curve,
        draw_similar_dissimilar,
        identical_groups,
        plot_captions,
    )
    from lifelong.plots import new_figure

    logs = {name: read_jsonl(path / "sessions.jsonl") for name, path in find_runs([runs / "a", runs / "b"]).items()}
    summaries = [summarize(r) for r in logs.values()]
    # Which strategies' curves coincide, computed here from the logs.
    curves = {}
    for name, records in logs.items():
        seen, ys = [], []
        for e, scores in sorted(_reader_scores(records).items()):
            seen += scores
            ys.append(sum(seen) / len(seen))
        curves[name] = ys
    together = [names for names, _ in identical_groups(curves) if len(names) > 1]
    assert together, "the scripted runs have strategies that tie"
    fig, ax = new_figure()
    draw_learning_curve(ax, logs)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for names in together:
        assert " = ".join(names) + " (identical)" in labels
    assert len(labels) == len(identical_groups(curves))
    assert "3 readers per episode" in ax.get_title() and _legend_is_beside(fig, ax)

    fig, ax = new_figure()
    draw_similar_dissimilar(ax, summaries, logs)
    texts = [t.get_text() for t in ax.texts]
    none = summaries[[s["strategy"] for s in summaries].index("none")]
    assert none["similar"] == 0.0 and f"0.00\nn={none['n_similar']}" in texts  # a zero bar says so
    zero_bar = next(p for p in ax.patches if p.get_height() == 0)
    assert zero_bar.get_linewidth() > 0  # and is drawn (its outline)
    assert texts.count("n/a\nn=0") == sum(1 for s in summaries if s["n_dissimilar"] == 0)
    assert _legend_is_beside(fig, ax)
    captions = plot_captions(summaries)
    assert all("±1 standard error" in captions[k] for k in ("learning_curve", "similar_dissimilar"))


def test_the_bench_plot_shows_n_chance_and_the_step():
    from lifelong.bench.evaluate import chance_level, draw_accuracy
    from lifelong.data.registry import get_task
    from lifelong.plots import new_figure

    mqar = get_task("mqar", vocab_size=64, num_kv_pairs=4)
    assert chance_level(mqar) == 1 / 32  # the upper half of the vocabulary holds the values
    report = {"lengths": [64, 128], "n": 4, "step": 200, "title": "tiny: mqar", "chance": {"mqar": 1 / 32},
              "results": {"mqar": {"64": {"accuracy": 0.5, "scores": [1, 0, 1, 0]},
                                   "128": {"accuracy": 0.25, "scores": [1, 0, 0, 0]}}}}
    fig, ax = new_figure()
    draw_accuracy(ax, report)
    assert "n=4 per point" in ax.get_title() and "checkpoint step 200" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mqar: chance 0.031" in labels and _legend_is_beside(fig, ax)
    bars = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    segments = bars[0].lines[2][0].get_segments()
    assert [round(seg[1][1] - seg[0][1], 6) for seg in segments] == [round(2 * (1 / 3) ** 0.5 / 2, 6),
                                                                      round(2 * 0.5 / 2, 6)]
