"""Model specs: one string picks the backend.

    local                        the embedded Gemma 3 270M, in-process (llama.cpp)
    llamacpp:PATH                any GGUF file, in-process (llama.cpp)
    openai:URL#MODEL             an OpenAI-compatible server (vLLM, llama.cpp, Ollama, hosted)
    hf:PATH                      transformers (a model folder or a .gguf; hf:local = embedded)
    hf-cms:PATH?layers=…&levels=…  the same, with CMS levels that learn in context in place of
                                 the chosen layers' MLPs (``lifelong.neural.retrofit``; a
                                 backend that a higher layer registers, see ``register_backend``)

Options follow a ``?``: ``local?ctx=16384&threads=2``,
``openai:http://127.0.0.1:8080/v1#gemma?ctx=8192&timeout=60``,
``hf:local?adapter=acme`` (the LoRA adapter consolidated from namespace acme's
notes; ``acme@2`` for its version 2, or a path to an exported adapter folder).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl

from lifelong.errors import ConfigError
from lifelong.llm.base import LLM
from lifelong.redact import redact_url

FORMS = ("local, llamacpp:PATH, openai:URL#MODEL, hf:PATH, hf-cms:PATH "
         "(options after '?', e.g. local?ctx=16384, hf:local?adapter=NAMESPACE)")

# Backends that live above this layer (they build torch models from ``lifelong.neural``)
# register an opener here: kind -> opener(target, query, spec). Importing their module
# registers them; the CLI does that for every spec it is given.
_BACKENDS: dict[str, Any] = {}
_BACKEND_HOMES = {"hf-cms": "lifelong.neural.retrofit"}  # kind -> the module that registers it


def backend_home(spec: str) -> str | None:
    """The module to import before ``load_llm(spec)`` when its backend registers itself."""
    return _BACKEND_HOMES.get(_split(spec.strip())[0])


def register_backend(kind: str, opener: Any) -> None:
    """Make ``load_llm("KIND:TARGET?QUERY")`` call ``opener(target, query, spec)``."""
    _BACKENDS[kind] = opener

_ALIASES = {"ctx": "context_window"}
_NOUNS = {int: "a whole number", float: "a number", str: "a string"}


def _options(query: str, allowed: dict[str, type], spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spec = redact_url(spec)  # what the messages below show
    for key, value in parse_qsl(query, keep_blank_values=True):
        key = _ALIASES.get(key, key)
        if key not in allowed:
            names = ", ".join(sorted({k for k in allowed} | {a for a, b in _ALIASES.items() if b in allowed}))
            raise ConfigError(f"unknown option {key!r} in model spec {spec!r}", hint=f"known options: {names}")
        kind = allowed[key]
        try:
            out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
        except ValueError as exc:
            noun = _NOUNS.get(kind, kind.__name__)
            raise ConfigError(f"option {key}={value!r} in {spec!r} is not {noun}",
                              hint=f"give {key} {noun}, e.g. local?ctx=8192") from exc
    return out


def _dataclass_types(cls: type) -> dict[str, type]:
    types = {"int": int, "float": float, "bool": bool, "str": str}
    out = {}
    for f in fields(cls):
        name = str(f.type).split("|")[0].strip()
        out[f.name] = types.get(name, str)
    return out


def _split(spec: str) -> tuple[str, str]:
    kind, _, rest = spec.partition(":")
    if "?" in kind:  # "local?ctx=…"
        kind, _, q = kind.partition("?")
        rest = "?" + q
    return kind, rest


def resolve_gguf(spec: str, **overrides: Any) -> tuple[str, Any, str | None]:
    """(file, LocalConfig, display name) of a ``local`` or ``llamacpp:PATH`` spec."""
    from lifelong.llm.local import LocalConfig

    kind, rest = _split(spec)
    if kind not in ("local", "llamacpp"):
        raise ConfigError(f"not a GGUF spec: {spec!r}", hint="use local or llamacpp:PATH")
    target, _, query = rest.partition("?")
    cfg = LocalConfig(**{**_options(query, _dataclass_types(LocalConfig), spec), **overrides})
    if kind == "local":
        if target:
            raise ConfigError(f"'local' takes no path (got {spec!r})", hint="use llamacpp:PATH for a file")
        from lifelong.llm.local import GEMMA_CHAT_TEMPLATE
        from lifelong.llm.model_files import default_model_path

        if cfg.chat_template is None:
            cfg.chat_template = GEMMA_CHAT_TEMPLATE
        return str(default_model_path()), cfg, "gemma-3-270m (local)"
    if not target:
        raise ConfigError("llamacpp: needs a path", hint="llamacpp:/path/to/model.gguf")
    return target, cfg, None


def gguf_context_window(spec: str) -> int | None:
    """The context window a ``local`` or ``llamacpp:PATH`` spec will load with (the
    embedded backend takes it from the spec, not the file); None for other specs."""
    kind, rest = _split(spec.strip())
    if kind not in ("local", "llamacpp"):
        return None
    from lifelong.llm.local import LocalConfig

    _target, _, query = rest.partition("?")
    return int(LocalConfig(**_options(query, _dataclass_types(LocalConfig), spec)).context_window)


def load_llm(spec: str | None = None) -> LLM:
    """Open the model a spec string names. ``None`` reads ``LIFELONG_MODEL`` or uses ``local``."""
    import os

    spec = (spec or os.environ.get("LIFELONG_MODEL") or "local").strip()
    kind, rest = _split(spec)
    if kind in ("local", "llamacpp"):
        from lifelong.llm.local import LocalLLM

        path, cfg, name = resolve_gguf(spec)
        return LocalLLM(path, cfg, name=name)
    if kind == "openai":
        from lifelong.llm.openai_compat import OpenAIConfig, OpenAILLM

        url_part, sep, model_part = rest.partition("#")
        if not sep or not model_part:
            raise ConfigError(f"openai spec needs a model name after '#': {redact_url(spec)!r}",
                              hint="openai:http://127.0.0.1:8080/v1#MODEL")
        model, _, query = model_part.partition("?")
        # The URL may be written as openai://host… or openai:http://host…
        url = url_part if url_part.startswith("http") else "http:" + url_part
        cfg = OpenAIConfig(**_options(query, {"context_window": int, "timeout": float, "retries": int,
                                               "backoff": float}, spec))
        return OpenAILLM(url, model, cfg)
    if kind in _BACKEND_HOMES and kind not in _BACKENDS:
        raise ConfigError(f"the {kind}: backend is not loaded",
                          hint=f"import {_BACKEND_HOMES[kind]} first (the lifelong CLI does)")
    if kind in _BACKENDS:
        target, _, query = rest.partition("?")
        return _BACKENDS[kind](target, query, spec)
    if kind == "hf":
        from lifelong.llm.hf import HFLLM

        target, _, query = rest.partition("?")
        opts = _options(query, {"context_window": int, "device": str, "adapter": str}, spec)
        if not target:
            raise ConfigError("hf: needs a path", hint="hf:/path/to/model-folder, hf:model.gguf or hf:local")
        return HFLLM(target, **opts)
    raise ConfigError(f"unknown model spec {redact_url(spec)!r}", hint=f"use one of: {FORMS}")
