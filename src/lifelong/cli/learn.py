"""``lifelong learn …``: the memory-learning protocol from the shell.

``lifelong learn eval`` runs writer/reader episodes for one strategy or all of
them and writes the session log, plots and an HTML report; ``lifelong learn
report`` rebuilds the report from one or more output folders (e.g. strategies
run as separate processes); ``lifelong learn suites`` lists what can be run.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

learn_app = typer.Typer(help="The memory-learning protocol: do written memories help new instances?",
                        no_args_is_help=True)


@learn_app.command("eval")
def eval_cmd(
    suite: str = typer.Option("onboarding", help="built-in suite name or a path to a .jsonl task file"),
    model: str = typer.Option("local", "--model", "-m", envvar="LIFELONG_MODEL", show_envvar=True,
                              help="model spec: local, llamacpp:PATH, openai:URL#MODEL, hf:PATH"),
    strategy: str = typer.Option("all", help="none, transcript, add-only, notes, full, or all"),
    episodes: int = typer.Option(20, min=1, help="sequential episodes on one memory"),
    readers: int = typer.Option(4, min=1, help="reader sessions per episode"),
    seed: int = typer.Option(0, help="fixes the world, every task drawn and every model seed"),
    out: Path = typer.Option(Path("learn-out"), help="output folder (re-running resumes from its log)"),
    max_tokens: int = typer.Option(24, min=1, help="tokens per answer"),
    reflection_tokens: int = typer.Option(32, min=1, help="tokens for the writer's note"),
    doc_tokens: int = typer.Option(64, min=1, help="tokens for the writer's documentation entry"),
    p_same: float = typer.Option(0.01, help="probability a reader gets the writer's own task"),
    p_similar: float = typer.Option(0.89, help="... a task of the same family"),
    p_dissimilar: float = typer.Option(0.10, help="... a task from the dissimilar pool"),
    note_penalty: float = typer.Option(0.0005, help="λ: reward penalty per note token"),
    context_penalty: float = typer.Option(0.0001, help="μ: reward penalty per context token"),
    doc_penalty: float = typer.Option(0.0, help="ν: reward penalty per documentation token"),
    note_budget: int | None = typer.Option(
        None, "--note-budget", min=1,
        help="token budget of the notes block (default: the model's context window − task reserve)"),
    concurrency: int = typer.Option(1, min=1, help="readers at once (server backends only)"),
    writer: str | None = typer.Option(
        None, "--writer",
        help="model spec of the writer, if not --model (e.g. a trained writer: 'hf:local?adapter=PATH'); "
             "readers use --model"),
) -> None:
    """Run the protocol; print a summary table, write plots and report.html into OUT.

    The last line is "reward=… similar=… dissimilar=… note_tokens=…"; with
    --strategy all there is one such line per strategy, prefixed "NAME: ".
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lifelong.cli.common import load_llm
    from lifelong.learn.protocol import Protocol, ProtocolConfig
    from lifelong.learn.report import final_line, summarize, summary_table, write_report
    from lifelong.learn.strategies import get_strategy, strategy_names
    from lifelong.learn.suites import load_suite

    config = ProtocolConfig(
        episodes=episodes, readers=readers, seed=seed, max_tokens=max_tokens,
        reflection_max_tokens=reflection_tokens, doc_max_tokens=doc_tokens, p_same=p_same,
        p_similar=p_similar, p_dissimilar=p_dissimilar, note_penalty=note_penalty,
        context_penalty=context_penalty, doc_penalty=doc_penalty, note_budget_tokens=note_budget,
        concurrency=concurrency,
    )
    names = strategy_names() if strategy == "all" else [strategy]
    strategies = [get_strategy(n) for n in names]  # fail on a bad name before loading a model
    task_suite = load_suite(suite, seed)
    console = Console()
    llm = load_llm(model)
    writer_llm = None
    summaries = []
    try:
        writer_llm = load_llm(writer) if writer else None
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            for strat in strategies:
                bar = progress.add_task(f"{strat.name:>10}", total=episodes * (1 + readers))
                result = Protocol(
                    llm, task_suite, strat, config, out,
                    progress=lambda done, total, bar=bar: progress.update(bar, completed=done, total=total),
                    writer_llm=writer_llm,
                ).run()
                summaries.append(summarize(result.records))
    finally:
        llm.close()
        if writer_llm is not None:
            writer_llm.close()
    report = write_report([out], out)
    console.print(summary_table(summaries, width=console.width))
    console.print(escape(f"report: {report['html']}"), highlight=False)
    if len(summaries) == 1:
        print(final_line(summaries[0]))
    else:
        for s in summaries:
            print(f"{s['strategy']}: {final_line(s)}")


@learn_app.command("train-writer")
def train_writer_cmd(
    config: Path = typer.Argument(..., help="TOML config (see configs/learn/)"),
    out: Path = typer.Option(Path("writer-out"), help="output folder (re-running resumes from its last checkpoint)"),
    fresh: bool = typer.Option(False, "--fresh", help="start again instead of resuming"),
    steps: int | None = typer.Option(None, min=1, help="override [grpo] steps (e.g. to extend a finished run)"),
) -> None:
    """Train the memory writer with GRPO on the protocol's reward (a LoRA adapter on an hf: model).

    Writes OUT/adapter (use it as --writer 'hf:local?adapter=OUT/adapter' in
    `lifelong learn eval`), OUT/checkpoints, OUT/rewards.jsonl (every completion,
    every reward term), OUT/curve.json and OUT/reward.png. The last line is
    "reward first=… last=… adapter=…".
    """
    import dataclasses

    from rich.console import Console

    from lifelong.train.writer import load_config, train_writer

    cfg = load_config(config)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    console = Console(stderr=True)
    summary = train_writer(cfg, out, resume=not fresh, progress=lambda m: console.print(escape(m), highlight=False))
    first, last = summary["first"] or {}, summary["last"] or {}
    console.print(escape(f"reward curve: {out / 'reward.png'}"), highlight=False)
    print(f"reward first={first.get('reward')} last={last.get('reward')} states={summary['states']} "
          f"train_s={summary['train_s']} adapter={summary['adapter']}")


@learn_app.command("report")
def report_cmd(
    folders: list[Path] = typer.Argument(..., help="output folders of earlier runs"),
    out: Path = typer.Option(Path("learn-report"), help="where to write report.html and the plots"),
) -> None:
    """Put the strategies of one or more runs side by side in one report."""
    from rich.console import Console

    from lifelong.learn.report import final_line, summary_table, write_report

    report = write_report(folders, out)
    console = Console()
    console.print(summary_table(report["summaries"], width=console.width))
    console.print(escape(f"report: {report['html']}"), highlight=False)
    for s in report["summaries"]:
        print(f"{s['strategy']}: {final_line(s)}")


@learn_app.command("suites")
def suites_cmd() -> None:
    """List the built-in suites and strategies."""
    from lifelong.learn.strategies import get_strategy, strategy_names
    from lifelong.learn.suites import suite_names

    print("suites: " + ", ".join(suite_names()) + " (or a path to a .jsonl file)")
    for name in strategy_names():
        print(f"strategy {name}: {get_strategy(name).description}")


def register(app: typer.Typer) -> None:
    app.add_typer(learn_app, name="learn")
