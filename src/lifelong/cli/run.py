"""``lifelong run`` (one task with memory) and ``lifelong consolidate``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lifelong.cli.common import MemoryArgs, console, memory_options, where_options, working


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
    with mem.open(create=True) as ctx, working("running the task") as step:
        step("loading the model")
        llm = ctx.model.llm
        mem.author = llm.name
        notes = ctx.notes(counting=True, create=True)
        docs = ctx.docs(create=True)
        cfg = SessionConfig(protocol=protocol, reflect=reflect,
                            transcript_dir=transcripts or data_dir() / "transcripts")
        out = Session(llm, notes, docs, cfg, on_step=step).run(t)
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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan as a diff; change nothing.")] = False,
    no_model: Annotated[bool, typer.Option("--no-model", help="Only merge near-duplicate notes.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply a plan that supersedes or drops notes "
                                      "without asking (for scripts).")] = False,
    into_weights: Annotated[bool, typer.Option("--into-weights", help="Train the notes into the namespace's "
                                               "LoRA adapter (context distillation; model default hf:local).")] = False,
    retire: Annotated[bool, typer.Option("--retire", help="With --into-weights: take the consolidated notes out "
                                         "of the block (soft delete, recoverable).")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="With --into-weights: discard an unfinished "
                                           "round instead of resuming it.")] = False,
    with_docs: Annotated[bool, typer.Option("--with-docs", help="With --into-weights: the docs' first "
                                            "pages too.")] = False,
    epochs: Annotated[int, typer.Option(min=1, help="With --into-weights: epochs of the round.")] = 3,
    steps: Annotated[int | None, typer.Option(min=1, help="With --into-weights: a step budget.")] = None,
    time_budget: Annotated[float | None, typer.Option(help="With --into-weights: seconds of training; "
                                                      "past it the round is saved to resume.")] = None,
    objective: Annotated[str, typer.Option(help="With --into-weights: distill (from the model with the notes "
                                           "in context) or raw (LM loss on the note text).")] = "distill",
    teacher_notes: Annotated[str, typer.Option(help="With --into-weights: all (earlier rounds' notes too) or "
                                               "active (the block as it is).")] = "all",
    rank: Annotated[int, typer.Option(min=1, help="With --into-weights: LoRA rank.")] = 16,
    lr: Annotated[float, typer.Option(help="With --into-weights: learning rate.")] = 5e-4,
    transcripts: Annotated[Path | None, typer.Option(help="With --into-weights: where sessions recorded their "
                                                     "tasks (default: <data dir>/transcripts).")] = None,
    adapters: Annotated[Path | None, typer.Option(help="With --into-weights: adapters root "
                                                  "(default: <data dir>/adapters).")] = None,
    *, mem: MemoryArgs,
) -> None:
    """Rewrite the notes smaller with a model (possibly a newer one inheriting them).

    The plan is checked (no fact lost, no duplicate, nothing copied from the
    prompt's example) and shown as a diff; a plan that supersedes or drops
    notes is applied only when confirmed (or with --yes). Every replaced note
    stays in history: `lifelong notes restore ID` brings one back.

    With --into-weights the notes are trained into the namespace's LoRA
    adapter instead (use it as -m 'hf:local?adapter=NAMESPACE').
    """
    if into_weights:
        _into_weights(mem, retire=retire, rollback=rollback, with_docs=with_docs, epochs=epochs, steps=steps,
                      time_budget=time_budget, objective=objective, teacher_notes=teacher_notes, rank=rank,
                      lr=lr, transcripts=transcripts, adapters=adapters)
        return
    from lifelong.context.consolidate import apply, propose
    from lifelong.errors import ValidationError

    with mem.open() as ctx:
        ctx.store.require_namespace(mem.namespace)  # an unknown one fails before the model loads
        with working("consolidating") as step:
            step("loading the model")
            llm = ctx.model.llm
            mem.author = llm.name
            notes = ctx.notes(counting=True)
            docs = ctx.docs()
            r = propose(None if no_model else llm, notes, on_step=step)
        for line in r.diff():
            style = {"+": "green", "-": "red"}.get(line[:1], "")
            console.print(escape(line), style=style, markup=False, highlight=False)
        for line, why in r.plan.refused:
            console.print(f"[yellow]left out:[/] {escape(line)} [dim]({escape(why)})[/]", highlight=False)
        if r.plan.empty() or dry_run:
            head = "[yellow]not applied:[/] " if r.plan.empty() else "[yellow]dry run, not applied:[/] "
            console.print(head + escape(r.reason), highlight=False)
            console.print(f"tokens_before={r.tokens_before} tokens_after={r.tokens_after}")
            return
        if r.plan.destructive and not yes:
            if not sys.stdin.isatty():
                raise ValidationError("this plan supersedes or drops notes; not applied without confirmation",
                                      hint="add --yes to apply it, or --dry-run to only look at it")
            if not typer.confirm("Apply this plan?", default=False, err=True):
                console.print("[yellow]not applied:[/] declined; nothing changed")
                return
        apply(r, notes, docs)
    console.print("[green]applied:[/] " + escape(r.reason), highlight=False)
    if r.superseded or r.dropped:
        gone = " ".join(map(str, sorted(r.superseded + r.dropped)))
        console.print(escape(f"replaced notes stay in history: lifelong notes show ID, "
                             f"lifelong notes restore ID{where_options(mem)} (ids {gone})"), highlight=False)
    console.print(f"tokens_before={r.tokens_before} tokens_after={r.tokens_after}")


def _into_weights(mem: MemoryArgs, *, retire: bool, rollback: bool, with_docs: bool, epochs: int,
                  steps: int | None, time_budget: float | None, objective: str, teacher_notes: str, rank: int,
                  lr: float, transcripts: Path | None, adapters: Path | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lifelong.context.session import recorded_task_prompts
    from lifelong.errors import ConfigError
    from lifelong.llm.adapters import AdapterStore
    from lifelong.paths import data_dir
    from lifelong.train.distill import DistillConfig, consolidate_into_weights

    mem.model = mem.model or "hf:local"
    if not mem.model.startswith("hf:"):
        raise ConfigError(f"--into-weights trains through the transformers backend, not {mem.model!r}",
                          hint="use -m hf:local (the embedded model as a torch model) or -m hf:PATH")
    cfg = DistillConfig(epochs=epochs, max_steps=steps, max_seconds=time_budget, objective=objective,
                        teacher_notes=teacher_notes, rank=rank, lr=lr)
    recorded = recorded_task_prompts(transcripts or data_dir() / "transcripts", mem.namespace,
                                     limit=cfg.recorded_tasks)
    with mem.open() as ctx:
        llm = ctx.model.llm
        mem.author = "consolidation"
        notes = ctx.notes(counting=True)
        docs = ctx.docs() if with_docs else None
        store = AdapterStore(mem.namespace, adapters)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            ids: dict[str, object] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in ids:
                    ids[stage] = bar.add_task(f"{stage:>8}", total=total)
                bar.update(ids[stage], completed=done, total=total)

            r = consolidate_into_weights(llm, notes, store=store, config=cfg, docs=docs, recorded=recorded,
                                         retire=retire, rollback=rollback, progress=progress)
    if r.steps == 0:
        console.print(f"[yellow]{escape(r.message)}[/]")
        return
    console.print(f"[green]{escape(r.message)}[/]" + (f" (resumed at step {r.resumed_from})" if r.resumed_from
                                                       else ""))
    console.print(f"sources: {r.sources}; loss {r.loss_first:.3f} → {r.loss_last:.3f}; "
                  f"data {r.data_seconds:.0f} s, training {r.train_seconds:.0f} s; {r.adapter_bytes} bytes")
    for nid in r.retired:
        console.print(f"  retired note [{nid}] (restore: lifelong notes restore {nid} -n {mem.namespace})")
    ref = mem.namespace if adapters is None else str(r.path)  # a custom root is named by its path
    console.print(f"use it: -m '{escape(mem.model)}?adapter={escape(ref)}'")


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("consolidate")(consolidate_cmd)
