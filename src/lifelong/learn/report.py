"""Reports of protocol runs: summary table, PNG plots, one HTML page.

Reads the ``sessions.jsonl`` of every strategy under one or more output
folders, so runs made separately (one process per strategy) still end up side
by side. Plots: the learning curve over episodes, similar vs dissimilar
score, memory tokens over time, and the reward decomposition.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_bytes, atomic_write_text
from lifelong.errors import NotFoundError
from lifelong.learn.protocol import read_jsonl
from lifelong.learn.strategies import NAMESPACE, strategy_names
from lifelong.plots import new_figure, png_bytes

# --- Loading and summarising --------------------------------------------------


def find_runs(folders: Sequence[str | Path]) -> dict[str, Path]:
    """strategy name → its run folder (``<out>/<strategy>/sessions.jsonl``)."""
    runs: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise NotFoundError(f"no output folder {folder}", hint="pass the output folder of a protocol run")
        candidates = [folder] if (folder / "sessions.jsonl").exists() else sorted(folder.iterdir())
        for run in candidates:
            log = run / "sessions.jsonl"
            if log.exists():
                records = read_jsonl(log)
                if records and records[0].get("type") == "run":
                    runs[records[0]["strategy"]] = run
    order = {name: i for i, name in enumerate(strategy_names())}
    return dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One strategy's run, reduced to the figures the table and final line show.

    Scores by relation are means over reader *sessions* (not over episodes),
    so a rare relation is weighted by how often it was actually drawn.
    """
    header = next(r for r in records if r["type"] == "run")
    episodes = [r for r in records if r["type"] == "episode"]
    sessions = [r for r in records if r["type"] == "session"]
    readers = [r for r in sessions if r["role"] == "reader"]
    writers = [r for r in sessions if r["role"] == "writer"]

    def scores(rel: str) -> list[float]:
        return [r["score"] if r["score"] is not None else 0.0 for r in readers if r["relation"] == rel]

    return {
        "strategy": header["strategy"],
        "suite": header["suite"],
        "model": header["model"],
        "episodes": len(episodes),
        "readers": len(readers),
        "reward": _mean([e["reward"] for e in episodes]),
        "reader_score": _mean([e["reader_score"] for e in episodes]),
        "same": _mean(scores("same")),
        "similar": _mean(scores("similar")),
        "dissimilar": _mean(scores("dissimilar")),
        "n_same": len(scores("same")),
        "n_similar": len(scores("similar")),
        "n_dissimilar": len(scores("dissimilar")),
        "writer_score": _mean([w["score"] if w["score"] is not None else 0.0 for w in writers]),
        "note_tokens": _mean([e["note_tokens"] for e in episodes]),
        "final_note_tokens": episodes[-1]["note_tokens"] if episodes else 0,
        "doc_tokens": _mean([e["doc_tokens"] for e in episodes]),
        "context_tokens": _mean([e["context_tokens"] for e in episodes]),
        "note_penalty": _mean([e["note_penalty"] for e in episodes]),
        "context_penalty": _mean([e["context_penalty"] for e in episodes]),
        "doc_penalty": _mean([e["doc_penalty"] for e in episodes]),
        "errors": sum(1 for s in sessions if s["error"]),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_VALUE = r"(?:-?\d+\.\d{3}|n/a)"
FINAL_LINE_RE = rf"reward={_VALUE} similar={_VALUE} dissimilar={_VALUE} note_tokens=\d+\.\d"


def final_line(summary: dict[str, Any]) -> str:
    """``reward=… similar=… dissimilar=… note_tokens=…`` (the CLI's last line)."""
    return (f"reward={_fmt(summary['reward'])} similar={_fmt(summary['similar'])} "
            f"dissimilar={_fmt(summary['dissimilar'])} note_tokens={_fmt(summary['note_tokens'], 1)}")


COLUMNS = [
    ("strategy", "strategy", None), ("episodes", "episodes", None), ("reward", "reward", 3),
    ("reader_score", "reader score", 3), ("similar", "similar", 3), ("dissimilar", "dissimilar", 3),
    ("same", "same", 3), ("writer_score", "writer", 3), ("note_tokens", "note tok (mean)", 1),
    ("final_note_tokens", "note tok (end)", None), ("doc_tokens", "doc tok", 1),
    ("context_tokens", "context tok", 1), ("errors", "errors", None),
]


def _cell(summary: dict[str, Any], key: str, digits: int | None) -> str:
    value = summary[key]
    if key in ("same", "similar", "dissimilar") and value is not None:
        return f"{value:.{digits}f} (n={summary['n_' + key]})"
    return str(value) if digits is None else _fmt(value, digits)


# The terminal table, transposed: one row per figure, one column per strategy, so it
# reads at 80 columns (a row per strategy needs ~160). Rows: (key, label, digits).
TABLE_ROWS = [
    ("reward", "reward", 3), ("reader_score", "reader score", 3),
    ("similar", "similar", 3), ("n_similar", "  n", None),
    ("dissimilar", "dissimilar", 3), ("n_dissimilar", "  n", None),
    ("same", "same", 3), ("n_same", "  n", None),
    ("writer_score", "writer score", 3), ("note_tokens", "note tokens", 1),
    ("final_note_tokens", "  at the end", None), ("doc_tokens", "doc tokens", 1),
    ("context_tokens", "context tokens", 1), ("episodes", "episodes", None), ("errors", "errors", None),
]


def summary_table(summaries: Sequence[dict[str, Any]], width: int = 80) -> Any:
    """Rich tables of the strategies side by side, one column per strategy, as many
    tables as it takes to fit ``width`` columns (the figure names are never cut)."""
    from rich.console import Group
    from rich.table import Table

    label_width = max(len(label) for _, label, _ in TABLE_ROWS)
    # Pack strategies into tables greedily: a column is its widest cell plus a space each side
    # (values are at most 7 wide); the label column and its space come first in every table.
    parts: list[list[dict[str, Any]]] = [[]]
    used = label_width + 1
    for s in summaries:
        need = max(len(s["strategy"]), 7) + 2
        if parts[-1] and used + need - 1 > width:
            parts.append([])
            used = label_width + 1
        parts[-1].append(s)
        used += need
    tables = []
    for k, part in enumerate(parts):
        title = "memory-learning protocol" + (f" ({k + 1}/{len(parts)})" if len(parts) > 1 else "")
        table = Table(title=title, box=None, pad_edge=False)
        table.add_column("", no_wrap=True, min_width=label_width)
        for s in part:
            table.add_column(s["strategy"], justify="right", no_wrap=True)
        for key, label, digits in TABLE_ROWS:
            table.add_row(label, *(str(s[key]) if digits is None else _fmt(s[key], digits) for s in part))
        tables.append(table)
    return Group(*tables)


# --- Plots --------------------------------------------------------------------


_MARKERS = ("o", "s", "^", "x", "D", "v", "*")
_STYLES = ("-", "--", "-.", ":")


def plot_learning_curve(runs: dict[str, list[dict]]) -> bytes:
    fig, ax = new_figure()
    for i, (name, records) in enumerate(runs.items()):
        eps = [r for r in records if r["type"] == "episode"]
        xs = [e["episode"] for e in eps]
        # Running mean: a reader score per episode from 4 readers is too noisy to read alone.
        ys, total = [], 0.0
        for i, e in enumerate(eps):
            total += e["reader_score"]
            ys.append(total / (i + 1))
        # Strategies can tie exactly (same notes, same answers): vary the style so none hides.
        ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                linestyle=_STYLES[i % len(_STYLES)], label=name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("episode")
    ax.set_ylabel("reader score (running mean)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Learning curve")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_similar_dissimilar(summaries: Sequence[dict[str, Any]]) -> bytes:
    fig, ax = new_figure()
    names = [s["strategy"] for s in summaries]
    xs = range(len(names))
    width = 0.38
    sim = [s["similar"] or 0.0 for s in summaries]
    dis = [s["dissimilar"] or 0.0 for s in summaries]
    ax.bar([x - width / 2 for x in xs], sim, width, label="similar")
    ax.bar([x + width / 2 for x in xs], dis, width, label="dissimilar")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean reader score")
    ax.set_title("Similar vs dissimilar tasks")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_memory_tokens(runs: dict[str, list[dict]]) -> bytes:
    fig, ax = new_figure()
    docs_ax = None
    for i, (name, records) in enumerate(runs.items()):
        eps = [r for r in records if r["type"] == "episode"]
        xs = [e["episode"] for e in eps]
        ax.plot(xs, [e["note_tokens"] for e in eps], marker=_MARKERS[i % len(_MARKERS)],
                markersize=4, linestyle=_STYLES[i % len(_STYLES)], label=f"{name} notes")
        if any(e["doc_tokens"] for e in eps):
            # Documentation is 10-100x the notes: its own axis, or the notes flatten to zero.
            docs_ax = docs_ax or ax.twinx()
            docs_ax.plot(xs, [e["doc_tokens"] for e in eps], color="grey", linestyle="--",
                         label=f"{name} docs (right axis)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("episode")
    ax.set_ylabel("note tokens readers inherit")
    ax.set_title("Memory size over time")
    handles, labels = ax.get_legend_handles_labels()
    if docs_ax is not None:
        docs_ax.set_ylabel("documentation tokens")
        more = docs_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8)
    return png_bytes(fig)


def plot_reward_decomposition(summaries: Sequence[dict[str, Any]]) -> bytes:
    fig, ax = new_figure()
    names = [s["strategy"] for s in summaries]
    xs = list(range(len(names)))
    score = [s["reader_score"] or 0.0 for s in summaries]
    ax.bar(xs, score, label="reader score", color="tab:green")
    bottom = [0.0] * len(xs)
    for key, colour in (("note_penalty", "tab:red"), ("context_penalty", "tab:orange"),
                        ("doc_penalty", "tab:purple")):
        vals = [-(s[key] or 0.0) for s in summaries]
        ax.bar(xs, vals, bottom=bottom, label=f"−{key.replace('_', ' ')}", color=colour)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.scatter(xs, [s["reward"] or 0.0 for s in summaries], color="black", zorder=3, label="reward")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(xs, names)
    ax.set_ylabel("per episode (mean)")
    ax.set_title("Reward = score − λ·notes − μ·context − ν·docs")
    ax.legend(fontsize=8)
    return png_bytes(fig)


# --- The report ---------------------------------------------------------------

PLOTS = ("learning_curve", "similar_dissimilar", "memory_tokens", "reward_decomposition")


def final_memory(run_folder: Path) -> tuple[str, dict[str, str]]:
    """(notes block, {doc path: text}) of the last episode's memory snapshot."""
    snaps = sorted((run_folder / "memory").glob("episode-*"))
    if not snaps:
        return "", {}
    last = snaps[-1]
    notes = ""
    if (last / "store.db").exists():
        from lifelong.context.notes import Notes
        from lifelong.context.store import open_store

        store = open_store(f"sqlite:///{last / 'store.db'}")
        try:
            if store.has_namespace(NAMESPACE):
                notes = Notes(store, NAMESPACE, 10**9, lambda t: 0).render()
        finally:
            store.close()
    docs_folder = last / "docs" / NAMESPACE
    docs = {}
    if docs_folder.is_dir():
        for p in sorted(docs_folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                docs[p.relative_to(docs_folder).as_posix()] = p.read_text(encoding="utf-8", errors="replace")
    return notes, docs


def write_report(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Write ``summary.json``-style data, the PNG plots and ``report.html`` into ``out``.

    Returns {"summaries": [...], "html": path, "plots": {name: path}}.
    """
    import json

    out = Path(out)
    runs_paths = find_runs(folders)
    if not runs_paths:
        raise NotFoundError(f"no run logs (sessions.jsonl) under {', '.join(map(str, folders))}",
                            hint="pass the output folder of a protocol run")
    runs = {name: read_jsonl(path / "sessions.jsonl") for name, path in runs_paths.items()}
    summaries = [summarize(records) for records in runs.values()]
    images = {
        "learning_curve": plot_learning_curve(runs),
        "similar_dissimilar": plot_similar_dissimilar(summaries),
        "memory_tokens": plot_memory_tokens(runs),
        "reward_decomposition": plot_reward_decomposition(summaries),
    }
    plot_paths = {}
    for name, data in images.items():
        path = out / f"{name}.png"
        atomic_write_bytes(path, data)
        plot_paths[name] = path
    atomic_write_text(out / "summary.json", json.dumps(summaries, indent=2, sort_keys=True) + "\n")

    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(s, k, d))}</td>" for k, _t, d in COLUMNS) + "</tr>"
        for s in summaries
    )
    head = "".join(f"<th>{html.escape(t)}</th>" for _k, t, _d in COLUMNS)
    figs = "".join(
        f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(images[n]).decode()}">'
        f"<figcaption>{n.replace('_', ' ')}</figcaption></figure>"
        for n in PLOTS
    )
    memories = []
    for name, path in runs_paths.items():
        notes, docs = final_memory(path)
        doc_html = "".join(
            f"<details><summary>{html.escape(p)}</summary><pre>{html.escape(t)}</pre></details>"
            for p, t in docs.items()
        )
        memories.append(
            f"<h3>{html.escape(name)}</h3><pre>{html.escape(notes) or '(no notes)'}</pre>{doc_html}"
        )
    lines = "".join(f"<li><code>{html.escape(s['strategy'])}: {html.escape(final_line(s))}</code></li>"
                    for s in summaries)
    suite = summaries[0]["suite"] if summaries else ""
    model = summaries[0]["model"] if summaries else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lifelong learn: {html.escape(suite)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:0.5em}}
img{{max-width:520px}}pre{{background:#f6f6f6;padding:0.6em;white-space:pre-wrap}}</style></head>
<body><h1>Memory-learning protocol</h1>
<p>suite <b>{html.escape(suite)}</b>, model <b>{html.escape(model)}</b>. A writer runs a task and
reflects; fresh readers inherit its memory and run same / similar / dissimilar tasks.
reward = aggregate(reader scores) − λ·note tokens − μ·context tokens − ν·doc tokens.</p>
<table><tr>{head}</tr>{rows}</table><ul>{lines}</ul>
{figs}
<h2>Memory after the last episode</h2>{''.join(memories)}
</body></html>
"""
    atomic_write_text(out / "report.html", page)
    return {"summaries": summaries, "html": out / "report.html", "plots": plot_paths}
