"""``lifelong run`` (one task with memory) and ``lifelong consolidate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lifelong.cli.common import MemoryArgs, console, memory_options


@memory_options("model", "budget", "workspace")
def run_cmd(
    task: Annotated[str, typer.Argument(help="The task, as the model should read it.")],
    expect: Annotated[str | None, typer.Option(help="Score 1 if the answer contains this text, else 0.")] = None,
    feedback: Annotated[str | None, typer.Option(help="What the world says after a wrong answer.")] = None,
    attempts: Annotated[int, typer.Option(help="Attempts when the answer is wrong and feedback is given.")] = 1,
    reflect: Annotated[bool, typer.Option(help="Write notes and docs at the end.")] = True,
    protocol: Annotated[str, typer.Option(help="text (any model) or tools (native tool calls).")] = "text",
    transcripts: Annotated[Path | None, typer.Option(help="Folder for transcripts (default: <data dir>/transcripts).")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Do one task with the namespace's notes and docs; reflect and write memories at the end."""
    from lifelong.context.session import Session, SessionConfig
    from lifelong.paths import data_dir
    from lifelong.task import Task

    check = None
    if expect is not None:
        want = expect.lower()
        check = lambda answer: 1.0 if want in answer.lower() else 0.0  # noqa: E731
    said = (lambda answer, score: feedback) if feedback else None
    t = Task(prompt=task, check=check, feedback=said, max_attempts=attempts, family=mem.namespace, id="cli")
    with mem.open() as ctx:
        llm = ctx.model.llm
        mem.author = llm.name
        notes = ctx.notes(counting=True, create=True)
        docs = ctx.docs(create=True)
        cfg = SessionConfig(protocol=protocol, reflect=reflect,
                            transcript_dir=transcripts or data_dir() / "transcripts")
        out = Session(llm, notes, docs, cfg).run(t)
    console.print(f"[bold]answer:[/] {escape(out.answer)}")
    if out.score is not None:
        console.print(f"[bold]score:[/] {out.score:g} after {out.attempts} attempt(s)")
    for nid in out.notes_written:
        console.print(f"[green]note written[/] [{nid}]")
    for path in out.docs_written:
        console.print(f"[green]doc written[/] {escape(path)}")
    for w in out.warnings:
        console.print(f"[yellow]{escape(w)}[/]")
    if out.error:
        console.print(f"[red]{escape(out.error)}[/]")
    console.print(f"[dim]{out.prompt_tokens} prompt + {out.completion_tokens} completion tokens, "
                  f"{out.tool_calls} tool calls, {out.latency_s:.1f} s, session {out.session_id}[/]")


@memory_options("model", "budget", "workspace")
def consolidate_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    no_model: Annotated[bool, typer.Option("--no-model", help="Only merge near-duplicate notes.")] = False,
    *, mem: MemoryArgs,
) -> None:
    """Rewrite the notes smaller with a model (possibly a newer one inheriting them)."""
    from lifelong.context.consolidate import consolidate

    with mem.open() as ctx:
        llm = ctx.model.llm
        mem.author = llm.name
        notes = ctx.notes(counting=True)
        docs = ctx.docs()
        r = consolidate(None if no_model else llm, notes, docs, dry_run=dry_run)
    console.print(("[green]applied:[/] " if r.applied else "[yellow]not applied:[/] ") + escape(r.reason))
    for ids, text in r.plan.merges:
        console.print(f"  {ids} → {escape(text)}")
    for nid in r.plan.drops:
        console.print(f"  drop [{nid}]")
    for path, text in r.plan.docs:
        console.print(f"  doc {escape(path)}: {escape(text)}")
    console.print(f"tokens_before={r.tokens_before} tokens_after={r.tokens_after}")


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("consolidate")(consolidate_cmd)
