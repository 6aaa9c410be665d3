"""``lifelong llm …`` and ``lifelong bench llm``: the model layer from the shell."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

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
    from lifelong.llm import load_llm

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
    from lifelong.llm import load_llm

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
    from lifelong.llm.serve import serve_forever

    serve_forever(model, host=host, port=port, ready=lambda url: console.print(
        f"serving {model} at {url}/v1  (spec: openai:{url}/v1#{model.split(':')[0]})", highlight=False))


def bench_llm_cmd(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    prompt_tokens: int = typer.Option(512, help="Prompt length for prefill."),
    decode_tokens: int = typer.Option(128, help="Tokens to generate for decode."),
    repeats: int = typer.Option(3, help="Repeats (median reported)."),
    compare: str = typer.Option(
        "", help="Also measure 'llama-cpp-python' on the same GGUF, in the same run."),
) -> None:
    """Prefill and decode tokens/s and load time of a model backend."""
    from lifelong.llm import load_llm
    from lifelong.llm.bench import LlamaCppPythonLLM, bench_llms

    spec = model or None
    openers = [lambda: load_llm(spec)]
    if compare:
        if compare != "llama-cpp-python":
            from lifelong.errors import ConfigError

            raise ConfigError(f"unknown --compare {compare!r}", hint="the only peer is llama-cpp-python")
        from lifelong.llm.model_files import default_model_path

        path = str(default_model_path())
        openers.append(lambda: LlamaCppPythonLLM(path))
    runs = bench_llms(openers, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens, repeats=repeats)
    table = Table(title="model backend throughput")
    for col in ("backend", "load s", "prefill tok/s", "decode tok/s", "prompt tok", "decoded tok"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for r in runs:
        table.add_row(r.name, f"{r.load_s:.2f}", f"{r.prefill_tok_s:.1f}", f"{r.decode_tok_s:.1f}",
                      str(r.prompt_tokens), str(r.decode_tokens))
    console.print(table)
    r = runs[0]
    if len(runs) > 1:
        p = runs[1]
        print(f"ratio to {p.name}: prefill {r.prefill_tok_s / p.prefill_tok_s:.2f}x, "
              f"decode {r.decode_tok_s / p.decode_tok_s:.2f}x, load {r.load_s / p.load_s:.2f}x")
    print(f"prefill_tok_s={r.prefill_tok_s:.1f} decode_tok_s={r.decode_tok_s:.1f} load_s={r.load_s:.2f}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
    bench_app.command("llm")(bench_llm_cmd)
