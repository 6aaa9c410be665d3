"""``lifelong adapter …``: the LoRA adapters ``consolidate --into-weights`` made, per namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lifelong.cli.common import MemoryArgs, console, memory_options, when

adapter_app = typer.Typer(help="The namespace's adapters (notes consolidated into weights): list, export, use.",
                          no_args_is_help=True)

AdaptersOpt = Annotated[Path | None, typer.Option("--adapters", help="Adapters root (default: <data dir>/adapters).")]


@adapter_app.command("list")
def list_cmd(namespace: Annotated[str, typer.Option("--namespace", "-n", envvar="LIFELONG_NAMESPACE")] = "default",
             adapters: AdaptersOpt = None) -> None:
    """Every version: what it consolidated, from which parent, its size; the current one marked."""
    from lifelong.llm.adapters import AdapterStore

    store = AdapterStore(namespace, adapters)
    current = store.current()
    table = Table("version", "current", "parent", "notes", "examples", "steps", "train s", "bytes", "created")
    for v in store.versions():
        m = v.meta
        table.add_row(str(v.version), "*" if current and current.version == v.version else "",
                      str(m.get("parent") or ""), ", ".join(str(n["id"]) for n in m.get("notes", [])),
                      str(m.get("examples", "")), str(m.get("steps", "")), str(m.get("train_seconds", "")),
                      str(v.size_bytes()), when(m["created"]) if "created" in m else "")
    console.print(table)
    if store.work_dir.exists():
        console.print("[yellow]an unfinished round is waiting: run `lifelong consolidate --into-weights` "
                      "again to resume it, or add --rollback to discard it[/]")


@adapter_app.command("export")
def export_cmd(dest: Annotated[Path, typer.Argument(help="A new folder for the peft adapter.")],
               namespace: Annotated[str, typer.Option("--namespace", "-n", envvar="LIFELONG_NAMESPACE")] = "default",
               version: Annotated[int | None, typer.Option(help="Version (default: the current one).")] = None,
               with_data: Annotated[bool, typer.Option("--with-data", help="Include the training examples.")] = False,
               adapters: AdaptersOpt = None) -> None:
    """Copy an adapter out as a plain peft folder (adapter_model.safetensors + adapter_config.json)."""
    from lifelong.llm.adapters import AdapterStore

    out = AdapterStore(namespace, adapters).export(dest, version, with_data=with_data)
    console.print(f"exported to {escape(str(out))}; load it with -m 'hf:local?adapter={escape(str(out.resolve()))}'"
                  " or peft's PeftModel.from_pretrained")


@memory_options("model", "budget")
def use_cmd(version: Annotated[str, typer.Argument(help="The version to make current, or 'none'.")],
            adapters: AdaptersOpt = None, *, mem: MemoryArgs) -> None:
    """Make an earlier version current (or none); notes the later versions retired come back."""
    from lifelong.errors import ConfigError
    from lifelong.llm.adapters import AdapterStore
    from lifelong.train.distill import use_version

    if version != "none" and not version.isdigit():
        raise ConfigError(f"version {version!r} is not a number", hint="give a version from `lifelong adapter list`")
    with mem.open() as ctx:
        notes = ctx.notes(counting=True)
        restored = use_version(notes, AdapterStore(mem.namespace, adapters), None if version == "none" else int(version))
    console.print(f"current adapter of {escape(mem.namespace)}: {version}")
    for nid in restored:
        console.print(f"  restored note [{nid}]")


adapter_app.command("use")(use_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(adapter_app, name="adapter")
