"""``lifelong llm …``: the model layer from the shell."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()

llm_app = typer.Typer(help="Talk to a model, or serve the embedded one.", no_args_is_help=True)

MODEL_HELP = "Model spec: local, llamacpp:PATH, openai:URL#MODEL, hf:PATH (default: $LIFELONG_MODEL or local)."


@llm_app.command("complete")
def complete_cmd(
    prompt: str = typer.Argument(..., help="The prompt text."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    max_tokens: int = typer.Option(64, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy (deterministic with --seed)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    stop: list[str] = typer.Option([], help="Stop string (repeatable)."),
) -> None:
    """Complete a prompt and print the continuation."""
    from lifelong.cli.common import load_llm

    llm = load_llm(model)
    try:
        c = llm.complete(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, stop=stop or None)
    finally:
        llm.close()
    console.print(c.text, markup=False, highlight=False)
    console.print(f"[dim]{c.prompt_tokens} prompt + {c.completion_tokens} completion tokens, "
                  f"{c.finish_reason}, {c.latency_s:.2f} s[/]")


@llm_app.command("tokens")
def tokens_cmd(text: str, model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP)) -> None:
    """Count the tokens of TEXT with the model's own tokenizer."""
    from lifelong.cli.common import load_llm

    llm = load_llm(model)
    try:
        console.print(llm.count_tokens(text))
    finally:
        llm.close()


@llm_app.command("serve")
def serve_cmd(
    model: str = typer.Option("local", "--model", "-m", help="local or llamacpp:PATH."),
    port: int = typer.Option(8080, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
) -> None:
    """Serve a GGUF model over an OpenAI-compatible HTTP API (llama.cpp's server)."""
    from lifelong.serve.llm import serve_forever

    serve_forever(model, host=host, port=port, ready=lambda url: console.print(
        escape(f"serving {model} at {url}/v1  (spec: openai:{url}/v1#{model.split(':')[0]})"), highlight=False))


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
