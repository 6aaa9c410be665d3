"""``lifelong demo``: the showcase, on the embedded model, in a throwaway memory.

1. A note held in context answers a question the model cannot answer alone.
2. A session fails a task, learns from the world's feedback, writes a note and
   a doc; a fresh session on a related task uses them.
3. The memory-learning protocol, briefly: no memory vs the full system on the
   same tasks.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

console = Console()


def demo_cmd(
    model: Annotated[str | None, typer.Option("--model", "-m", envvar="LIFELONG_MODEL",
                                              help="Model spec (default: local, the embedded Gemma 3 270M).")] = None,
    episodes: Annotated[int, typer.Option(help="Protocol episodes per strategy in act 3.")] = 5,
    readers: Annotated[int, typer.Option(help="Fresh reader sessions per episode in act 3.")] = 3,
    keep: Annotated[Path | None, typer.Option(help="Keep the demo's memory and report in this folder.")] = None,
) -> None:
    """Show context memory at work on the embedded model (a few minutes on 2 cores)."""
    from lifelong.cli.common import load_llm
    from lifelong.context import Docs, Notes, open_store
    from lifelong.context.session import Session, SessionConfig
    from lifelong.task import Task

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lifelong-demo-") as tmp:
        root = keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        console.print(Panel.fit("lifelong demo: memories a model writes for its future instances", style="bold"))
        with console.status("loading the model"):
            llm = load_llm(model or "local?ctx=4096")
        console.print(f"model: {llm.name}, context window {llm.context_window} tokens\n")
        store = open_store(f"sqlite:///{root}/memory.db")

        def contains(word: str):
            return lambda answer: 1.0 if word.lower() in answer.lower() else 0.0

        # -- act 1: a note held in context -----------------------------------------------
        console.rule("1. a note held in context")
        notes = Notes.for_llm(store, "act1", llm, create=True)
        notes.add("The Red team's code word is PELICAN.")
        question = Task(prompt="Tell the Red team's code word.", check=contains("PELICAN"), id="red")
        quiet = SessionConfig(reflect=False)
        with_note = Session(llm, notes, None, quiet).run(question)
        without = Session(llm, None, None, quiet).run(question)
        table = Table("", "answer", "correct")
        table.add_row("with the note", escape(with_note.answer), _mark(with_note.score))
        table.add_row("without it", escape(without.answer), _mark(without.score))
        console.print(escape(notes.render()))
        console.print(table)

        # -- act 2: a session writes memories, a fresh one uses them ---------------------
        console.rule("2. learning on the job")
        notes2 = Notes.for_llm(store, "acme", llm, create=True)
        docs2 = Docs(store, "acme", root / "docs", llm.count_tokens, create=True)
        first = Task(prompt="What is the code word of the Blue team?", check=contains("MARIGOLD"),
                     feedback=lambda a, s: "Wrong. The Blue team's code word is MARIGOLD.",
                     family="acme", id="blue-1")
        with console.status("session 1: the task, the world's feedback, reflection"):
            out1 = Session(llm, notes2, docs2, SessionConfig(transcript_dir=root / "transcripts")).run(first)
        console.print(f"session 1 answered {escape(repr(out1.answer))} → {_mark(out1.score)}; "
                      f"feedback: {escape(out1.feedback[0]) if out1.feedback else '-'}")
        console.print("it wrote the note: " + escape(" | ".join(notes2.get(i).text for i in out1.notes_written)))
        console.print(f"and documentation: {escape(', '.join(out1.docs_written))} "
                      f"({docs2.read(out1.docs_written[0]).total_chars if out1.docs_written else 0} characters)")
        second = Task(prompt="A new member joins the Blue team. Which code word must they use?",
                      check=contains("MARIGOLD"), family="acme", id="blue-2")
        fresh = Session(llm, notes2, docs2, quiet).run(second)
        blank = Session(llm, None, None, quiet).run(second)
        table = Table("fresh session, related task", "answer", "correct")
        table.add_row("with the memories", escape(fresh.answer), _mark(fresh.score))
        table.add_row("without", escape(blank.answer), _mark(blank.score))
        console.print(table)

        # -- act 3: the protocol ----------------------------------------------------------
        console.rule("3. the memory-learning protocol: same tasks, no memory vs the full system")
        from lifelong.learn.demo import run_side_by_side

        console.print(f"{episodes} episodes per strategy; each: a writer session, then fresh readers")
        summaries = run_side_by_side(llm, episodes=episodes, readers=readers, out=root / "learn", echo=False)
        table = Table("strategy", "similar", "dissimilar", "writer", "note tokens", "reward")
        for s in summaries:
            table.add_row(s["strategy"], f"{s['similar']:.2f} (n={s['n_similar']})",
                          f"{s['dissimilar']:.2f} (n={s['n_dissimilar']})", f"{s['writer_score']:.2f}",
                          f"{s['note_tokens']:.0f}", f"{s['reward']:.3f}")
        console.print(table)
        console.print("[dim]reader scores on tasks similar and dissimilar to the writer's; "
                      "reward = reader score − λ·note tokens − μ·context tokens[/]")
        store.close()
        llm.close()
    console.print(f"\n[dim]demo finished in {time.perf_counter() - t0:.0f} s[/]")


def _mark(score: float | None) -> str:
    if score is None:
        return "-"
    return "[green]yes[/]" if score >= 1.0 else "[red]no[/]"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
