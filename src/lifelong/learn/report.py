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
#
# Each plot is drawn on given axes by a ``draw_*`` function (what the tests look
# at) and written as PNG by its ``plot_*`` wrapper. Rules they share: the legend
# stands beside the axes, never on the data; strategies whose curves coincide are
# drawn once and named together ("notes = full"), so no line hides another
# unsaid; every mean says its n and carries ±1 standard error.


_MARKERS = ("o", "s", "^", "x", "D", "v", "*")
_STYLES = ("-", "--", "-.", ":")


def _legend_beside(ax: Any, handles: Any = None, labels: Any = None) -> None:
    args = () if handles is None else (handles, labels)
    ax.legend(*args, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def identical_groups(series: dict[str, Sequence[float]]) -> list[tuple[list[str], Sequence[float]]]:
    """Names whose series are equal point for point, grouped, in first-seen order."""
    groups: list[tuple[list[str], Sequence[float]]] = []
    for name, ys in series.items():
        for names, other in groups:
            if len(other) == len(ys) and all(abs(a - b) <= 1e-12 for a, b in zip(other, ys, strict=True)):
                names.append(name)
                break
        else:
            groups.append(([name], ys))
    return groups


def _group_label(names: list[str]) -> str:
    return names[0] if len(names) == 1 else " = ".join(names) + " (identical)"


def _stderr(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    return statistics.stdev(values) / n ** 0.5


def _reader_scores(records: Sequence[dict]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in records:
        if r["type"] == "session" and r["role"] == "reader":
            out.setdefault(int(r["episode"]), []).append(r["score"] if r["score"] is not None else 0.0)
    return out


def draw_learning_curve(ax: Any, runs: dict[str, list[dict]]) -> None:
    """Mean reader score over all readers so far, with a ±1 s.e. band, per strategy."""
    curves: dict[str, list[float]] = {}
    bands: dict[str, list[float]] = {}
    xs: dict[str, list[int]] = {}
    for name, records in runs.items():
        by_episode = _reader_scores(records)
        seen: list[float] = []
        xs[name], curves[name], bands[name] = [], [], []
        for e in sorted(by_episode):
            seen += by_episode[e]
            xs[name].append(e)
            curves[name].append(statistics.fmean(seen))
            bands[name].append(_stderr(seen))
    for i, (names, ys) in enumerate(identical_groups(curves)):
        first = names[0]
        lo = [y - b for y, b in zip(ys, bands[first], strict=True)]
        hi = [y + b for y, b in zip(ys, bands[first], strict=True)]
        (line,) = ax.plot(xs[first], ys, marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                          linestyle=_STYLES[i % len(_STYLES)], label=_group_label(names))
        ax.fill_between(xs[first], lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    readers = {len(v) for r in runs.values() for v in _reader_scores(r).values()}
    per = f"{readers.pop()} readers per episode" if len(readers) == 1 else "readers per episode vary"
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("episode")
    ax.set_ylabel("reader score, mean so far (±1 s.e.)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Learning curve ({per})", fontsize=10)
    _legend_beside(ax)


def plot_learning_curve(runs: dict[str, list[dict]]) -> bytes:
    fig, ax = new_figure(figsize=(7.6, 4.0))
    draw_learning_curve(ax, runs)
    return png_bytes(fig)


def _relation_scores(records: Sequence[dict], relation: str) -> list[float]:
    return [r["score"] if r["score"] is not None else 0.0 for r in records
            if r["type"] == "session" and r["role"] == "reader" and r["relation"] == relation]


def draw_similar_dissimilar(ax: Any, summaries: Sequence[dict[str, Any]], runs: dict[str, list[dict]]) -> None:
    """Mean reader score on similar and dissimilar tasks per strategy: ±1 s.e., the
    value and n over each bar; a zero bar is drawn as its outline, a missing one says n/a."""
    names = [s["strategy"] for s in summaries]
    width = 0.38
    for k, (relation, colour) in enumerate((("similar", "tab:blue"), ("dissimilar", "tab:orange"))):
        offset = (k - 0.5) * width
        for j, name in enumerate(names):
            scores = _relation_scores(runs.get(name, []), relation)
            x = j + offset
            if not scores:
                ax.text(x, 0.01, "n/a\nn=0", ha="center", va="bottom", fontsize=7, color="grey")
                continue
            mean = statistics.fmean(scores)
            ax.bar(x, mean, width, color=colour, edgecolor=colour, linewidth=1.5,
                   label=relation if j == 0 else None)
            err = _stderr(scores)
            ax.errorbar(x, mean, yerr=err, color="black", capsize=3, linewidth=1)
            ax.text(x, min(1.0, mean + err) + 0.02, f"{mean:.2f}\nn={len(scores)}", ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(list(range(len(names))), names)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("mean reader score (±1 s.e.)")
    ax.set_title("Similar vs dissimilar tasks", fontsize=10)
    _legend_beside(ax)


def plot_similar_dissimilar(summaries: Sequence[dict[str, Any]], runs: dict[str, list[dict]]) -> bytes:
    fig, ax = new_figure(figsize=(7.6, 4.0))
    draw_similar_dissimilar(ax, summaries, runs)
    return png_bytes(fig)


def draw_memory_tokens(ax: Any, runs: dict[str, list[dict]]) -> None:
    notes: dict[str, list[float]] = {}
    xs: dict[str, list[int]] = {}
    for name, records in runs.items():
        eps = [r for r in records if r["type"] == "episode"]
        xs[name] = [e["episode"] for e in eps]
        notes[name] = [float(e["note_tokens"]) for e in eps]
    for i, (names, ys) in enumerate(identical_groups(notes)):
        ax.plot(xs[names[0]], ys, marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                linestyle=_STYLES[i % len(_STYLES)], label=f"{_group_label(names)}: notes")
    docs_ax = None
    for name, records in runs.items():
        eps = [r for r in records if r["type"] == "episode"]
        if any(e["doc_tokens"] for e in eps):
            # Documentation is 10-100x the notes: its own axis, or the notes flatten to zero.
            docs_ax = docs_ax or ax.twinx()
            docs_ax.plot([e["episode"] for e in eps], [e["doc_tokens"] for e in eps], color="grey",
                         linestyle="--", label=f"{name}: docs (right axis)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("episode")
    ax.set_ylabel("note tokens readers inherit")
    ax.set_title("Memory size over time", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if docs_ax is not None:
        docs_ax.set_ylabel("documentation tokens")
        more = docs_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    # beside the right axis when there is one
    ax.legend(handles, labels, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.12 if docs_ax is not None else 1.01, 1.0), borderaxespad=0)


def plot_memory_tokens(runs: dict[str, list[dict]]) -> bytes:
    fig, ax = new_figure(figsize=(7.6, 4.0))
    draw_memory_tokens(ax, runs)
    return png_bytes(fig)


def draw_reward_decomposition(ax: Any, summaries: Sequence[dict[str, Any]]) -> None:
    names = [s["strategy"] for s in summaries]
    xs = list(range(len(names)))
    score = [s["reader_score"] or 0.0 for s in summaries]
    ax.bar(xs, score, label="reader score", color="tab:green", edgecolor="tab:green", linewidth=1.5)
    bottom = [0.0] * len(xs)
    for key, colour in (("note_penalty", "tab:red"), ("context_penalty", "tab:orange"),
                        ("doc_penalty", "tab:purple")):
        vals = [-(s[key] or 0.0) for s in summaries]
        ax.bar(xs, vals, bottom=bottom, label=f"−{key.replace('_', ' ')}", color=colour)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    rewards = [s["reward"] or 0.0 for s in summaries]
    ax.scatter(xs, rewards, color="black", zorder=3, label="reward")
    for x, r, s in zip(xs, rewards, summaries, strict=True):
        ax.annotate(f"{r:.3f}\n({s['episodes']} ep.)", (x, max(r, s["reader_score"] or 0.0)),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(xs, names)
    ax.set_ylabel("per episode (mean)")
    ax.set_title("Reward = score − λ·notes − μ·context − ν·docs", fontsize=10)
    _legend_beside(ax)


def plot_reward_decomposition(summaries: Sequence[dict[str, Any]]) -> bytes:
    fig, ax = new_figure(figsize=(7.6, 4.0))
    draw_reward_decomposition(ax, summaries)
    return png_bytes(fig)


# --- The report ---------------------------------------------------------------

PLOTS = ("learning_curve", "similar_dissimilar", "memory_tokens", "reward_decomposition")


def plot_captions(summaries: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What each figure shows, in a sentence with its n (the report's captions)."""
    episodes = sorted({s["episodes"] for s in summaries})
    readers = sorted({s["readers"] for s in summaries})
    ep = "/".join(map(str, episodes)) or "0"
    rd = "/".join(map(str, readers)) or "0"
    return {
        "learning_curve": f"Mean reader score over all reader sessions so far, per strategy, with a ±1 "
                          f"standard error band ({ep} episodes, {rd} reader sessions per strategy). "
                          "Strategies whose curves coincide are drawn once and named together.",
        "similar_dissimilar": "Mean reader score on tasks similar and dissimilar to the writer's, per "
                              "strategy, ±1 standard error; the value and the number of reader sessions "
                              "n stand over each bar (n/a: none drawn).",
        "memory_tokens": "Tokens of the notes block each episode's readers inherit (left axis) and of "
                         f"the documentation (right axis, dashed), over {ep} episodes.",
        "reward_decomposition": "Mean per-episode reward (dots, with its value) as reader score minus the "
                                "note, context and documentation penalties (stacked bars).",
    }


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
        "similar_dissimilar": plot_similar_dissimilar(summaries, runs),
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
    captions = plot_captions(summaries)
    figs = "".join(
        f'<figure><img alt="{html.escape(captions[n])}" '
        f'src="data:image/png;base64,{base64.b64encode(images[n]).decode()}">'
        f"<figcaption>{html.escape(captions[n])}</figcaption></figure>"
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
