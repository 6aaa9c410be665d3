"""transformers backend (``hf:PATH``): a torch model that training code can touch.

PATH is a Hugging Face model folder, or a ``.gguf`` file (``hf:local`` is the
embedded Gemma). transformers dequantizes a GGUF into float weights, which
takes minutes on a small CPU, so the converted model is saved once as
safetensors under the user cache and later loads take seconds.

``adapter=`` puts a LoRA adapter on the model (``hf:local?adapter=acme``: the
current adapter of namespace ``acme``, made by ``lifelong consolidate
--into-weights``; ``acme@2``: its version 2; or a path to a peft folder). The
adapter is merged into the weights once at load, so answering costs what the
base model costs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, ContextOverflowError, ModelError
from lifelong.llm.base import Completion, Prompt, check_messages, render_messages
from lifelong.paths import cache_dir


def converted_dir(gguf: Path) -> Path:
    """Cache folder of a GGUF's converted weights, keyed by the file's identity."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "hf" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path) -> Path:
    """Dequantize once; write to a temp folder and rename, so a half-done cache is never used."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(gguf)
    if (target / "config.json").exists():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are dequantized floats now; drop the GGUF "quantizer" so they save.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(f"transformers could not convert {gguf}: {exc}",
                         hint="check that the GGUF's architecture is supported by transformers") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_source(path: str) -> Path:
    """What ``path`` names (``local``: the embedded model's GGUF), checked to exist."""
    if path == "local":
        from lifelong.llm.model_files import default_model_path

        src = default_model_path()
    else:
        src = Path(path).expanduser()
    if not src.exists():
        raise ModelError(f"model not found: {src}", hint="give a Hugging Face model folder or a .gguf file")
    return src


def _folder_of(src: Path) -> Path:
    return _convert_gguf(src) if src.suffix == ".gguf" else src


def model_folder(path: str) -> Path:
    """The transformers folder of ``path`` (``local``: the embedded model; a ``.gguf`` is
    converted once and cached; a folder is itself)."""
    return _folder_of(_model_source(path))


class _StopOnText:
    """Stop once the decoded continuation contains a stop string. (transformers'
    own ``stop_strings`` needs a byte-level BPE vocabulary; this works with any.)"""

    def __init__(self, tokenizer: Any, stop: list[str], n_prompt: int) -> None:
        self.tokenizer, self.stop, self.n_prompt = tokenizer, stop, n_prompt

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        text = self.tokenizer.decode(input_ids[0, self.n_prompt:], skip_special_tokens=True)
        done = any(s in text for s in self.stop)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class HFLLM:
    """A causal LM run by transformers on the CPU (or a GPU when present)."""

    def __init__(self, path: str, device: str | None = None, context_window: int | None = None,
                 adapter: str | None = None) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError("the hf backend needs the [hf] extra",
                             hint="pip install 'lifelong[hf]' (install torch==2.13.0 first for the CPU build)") from exc
        src = _model_source(path)
        t0 = time.perf_counter()
        folder = _folder_of(src)
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(self.device)
        self.model.eval()
        self.spec_target = path  # what a spec names the base model by ("local", a path)
        self.name = src.name
        self.adapter: Path | None = None
        if adapter:
            self._apply_adapter(adapter)
        self.load_s = time.perf_counter() - t0
        cfg_window = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.context_window = int(context_window or min(cfg_window, 32768))

    def _apply_adapter(self, ref: str) -> None:
        from lifelong.llm.adapters import check_base, read_meta, resolve_adapter

        folder = resolve_adapter(ref)
        if (folder / "lifelong.json").is_file():
            check_base(read_meta(folder), self.model.config, folder)
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ModelError("adapters need peft", hint="pip install 'lifelong[hf]'") from exc
        try:
            peft_model = PeftModel.from_pretrained(self.model, str(folder))
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"the adapter at {folder} does not fit {self.name}: {exc}",
                             hint="use the base model the adapter was trained on") from exc
        # Merged once: generation then costs exactly what the base model costs.
        self.model = peft_model.merge_and_unload().eval()
        self.adapter = folder
        self.name = f"{self.name}+lora:{ref}"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, prompt: Prompt) -> Any:
        """Token ids (1 × n tensor) of a prompt, exactly as ``complete`` feeds it to the model."""
        return self._encode_prompt(prompt)

    def _encode_prompt(self, prompt: Prompt) -> Any:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            return ids["input_ids"]
        return self.tokenizer(render_messages(prompt) + "\nassistant:", return_tensors="pt")["input_ids"]

    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion:
        torch = self._torch
        check_messages(prompt)
        if tools:
            raise ConfigError("the hf backend has no native tool calls",
                              hint="use the session's text tool protocol, or an openai: server")
        ids = self._encode_prompt(prompt).to(self.device)
        n_prompt = int(ids.shape[1])
        room = self.context_window - n_prompt
        if room <= 0:
            raise ContextOverflowError(f"prompt is {n_prompt} tokens; the context window is {self.context_window}",
                                       hint="shorten the prompt")
        kw: dict[str, Any] = {"max_new_tokens": max(1, min(max_tokens, room)),
                              "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}
        if temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature))
            if seed is not None:
                torch.manual_seed(int(seed))
        else:
            kw.update(do_sample=False, top_p=None, top_k=None)
        if stop:
            kw.update(stopping_criteria=[_StopOnText(self.tokenizer, list(stop), n_prompt)])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        new = out[0, n_prompt:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= kw["max_new_tokens"] else "stop"
        for s in stop or []:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Completion(text=text, prompt_tokens=n_prompt, completion_tokens=int(len(new)),
                          finish_reason=finish, latency_s=time.perf_counter() - t0)

    def close(self) -> None:
        self.model = None

    def __repr__(self) -> str:
        return f"HFLLM({self.name!r}, device={self.device!r})"
