"""``save_pretrained`` / ``from_pretrained``: a model as a folder Hugging Face tools know.

The folder holds ``config.json`` (the model's config dataclass, flat, plus a
``lifelong`` entry naming the class and, for a trained LM, its task and
tokenizer) and ``model.safetensors`` (the weights) -- the layout of
``huggingface_hub``'s ``ModelHubMixin``, so ``huggingface_hub.upload_folder``
publishes it as it is. Written here rather than through the mixin because
loading must be strict (a weight missing or of the wrong shape is an error,
not a silently random layer), offline, quiet, and must never unpickle.

    model.save_pretrained("runs/mac/model")
    model = CausalLM.from_pretrained("runs/mac/model")
    memory = NeuralMemory.from_pretrained("memory-folder")
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from lifelong.atomic import atomic_write_text
from lifelong.errors import ConfigError, NotFoundError

FORMAT = "lifelong.pretrained/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
T = TypeVar("T", bound="PretrainedMixin")


class PretrainedMixin:
    """For an ``nn.Module`` built from one config dataclass: ``cls(config)``.
    Subclasses set ``config_class``; the instance keeps it as ``self.config``."""

    config_class: type

    def save_pretrained(self, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into folder ``path`` (weights
        first, each file atomically: a folder with a config.json is complete).
        ``meta`` (JSON) is kept under ``config["lifelong"]``, e.g. a task and tokenizer."""
        from safetensors.torch import save_model

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_model(self, str(tmp))  # type: ignore[arg-type]  # handles tied weights
        os.replace(tmp, folder / WEIGHTS_NAME)
        config = dataclasses.asdict(self.config)  # type: ignore[attr-defined]
        config["lifelong"] = {"class": type(self).__name__, "format": FORMAT, **(meta or {})}
        atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config saved by an earlier version, brought to this one's meaning
        (a field added later whose default changed what the old config meant)."""
        return config

    @classmethod
    def from_pretrained(cls: type[T], path: str | os.PathLike[str], *, device: str = "cpu") -> T:
        """The model saved in folder ``path`` by :meth:`save_pretrained`, in eval mode."""
        from safetensors.torch import load_model

        config, _meta = read_pretrained_config(path, cls.__name__)
        config = cls.upgrade_config(config)
        try:
            model = cls(cls.config_class(**config))  # type: ignore[call-arg]
        except TypeError as exc:
            raise ConfigError(f"{Path(path) / CONFIG_NAME} does not fit {cls.config_class.__name__}: {exc}",
                              hint="was it written by another version of lifelong?") from None
        try:
            load_model(model, str(Path(path) / WEIGHTS_NAME), strict=True, device=str(device))
        except RuntimeError as exc:  # a missing or extra weight, a wrong shape
            first = str(exc).strip().splitlines()[0][:300]
            raise ConfigError(f"the weights in {path} do not fit its config: {first}",
                              hint="the folder's config.json and model.safetensors must be saved together") from None
        return model.to(device).eval()  # type: ignore[attr-defined,return-value]


def is_pretrained(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``save_pretrained``."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def read_pretrained_config(path: str | os.PathLike[str], expected: str | None = None) -> tuple[dict, dict]:
    """(the config fields, the ``lifelong`` entry) of a pretrained folder."""
    p = Path(path)
    if not is_pretrained(p):
        raise NotFoundError(f"no saved model at {p}",
                            hint=f"a saved model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME} "
                            "(save_pretrained writes one)")
    try:
        config = json.loads((p / CONFIG_NAME).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p / CONFIG_NAME} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{p / CONFIG_NAME} is not a JSON object")
    meta = config.pop("lifelong", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{p} was not saved by lifelong's save_pretrained",
                          hint="load lifelong models only; other folders need their own library")
    if expected is not None and meta.get("class") != expected:
        raise ConfigError(f"{p} holds a {meta.get('class')}, not a {expected}",
                          hint=f"load it with {meta.get('class')}.from_pretrained")
    return config, meta


__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "PretrainedMixin", "is_pretrained",
           "read_pretrained_config"]
