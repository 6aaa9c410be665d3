"""Run configs: one TOML (or YAML) file says which model, which task, how to train.

A config file has three tables, each a dataclass with defaults that work::

    name = "mac-tiny"
    [model]            # lifelong.neural.config.ModelConfig: which sequence mixer, how big
    kind = "mac"
    [task]             # TaskConfig: a task from lifelong.data.registry and its options
    name = "mqar"
    [train]            # TrainConfig: steps, batch, sequence length, optimiser, seed
    steps = 200

Unknown keys are errors, not silently ignored: a typo in ``windw = 64`` would
otherwise train a different model than the one the file describes.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError
from lifelong.neural.config import ModelConfig
from lifelong.validate import check_fields

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class TaskConfig:
    """A task from ``lifelong.data.registry.build_task(name, options)``."""

    name: str = "mqar"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "task")


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is global: DDP ranks split it evenly."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (and when stopped early)
    out_dir: str = "runs/default"
    device: str = "auto"  # auto: cuda if available, else cpu

    def __post_init__(self) -> None:
        check_fields(self, "train")  # `steps = "six"`, `batch_size = 4.5` are refused by name
        positive = {"steps": 1, "batch_size": 1, "seq_len": 2, "log_every": 1, "warmup_steps": 0,
                    "checkpoint_every": 0, "seed": 0}
        for name, least in positive.items():
            if getattr(self, name) < least:
                raise ConfigError(f"train.{name} must be >= {least}, got {getattr(self, name)}",
                                  hint="fix the [train] table of the config")
        if not (self.lr > 0 and self.grad_clip > 0 and self.weight_decay >= 0
                and 0 <= self.min_lr_ratio <= 1 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(
                "train: lr and grad_clip must be > 0, weight_decay >= 0, min_lr_ratio in [0, 1], "
                "beta1 and beta2 in [0, 1)",
                hint="e.g. lr = 3e-3, grad_clip = 1.0, beta1 = 0.9, beta2 = 0.95",
            )
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
                              hint="fix device in the [train] table (or pass --device)")


@dataclass
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_fields(self, "config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        data = dict(data)
        tables = {"model": ModelConfig, "task": TaskConfig, "train": TrainConfig}
        parts: dict[str, Any] = {}
        for key, kind in tables.items():
            parts[key] = _build(kind, data.pop(key, {}) or {}, f"{source} [{key}]")
        name = data.pop("name", "run")
        if data:
            raise ConfigError(
                f"{source}: unknown top-level keys {sorted(data)}",
                hint="a config has `name` and the tables [model], [task], [train]",
            )
        if not isinstance(name, str):
            raise ConfigError(f"{source}: name must be a string, got {name!r}", hint='e.g. name = "mac-tiny"')
        return cls(name=name, **parts)


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table", hint="see configs/tiny/*.toml for the shape")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {unknown}", hint=f"known keys: {', '.join(sorted(known))}"
        )
    try:
        return kind(**values)
    except ConfigError as exc:  # say which file; the message names the table and key
        raise ConfigError(f"{where.split(' [')[0]}: {exc.message}", hint=exc.hint) from None


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a ``.toml``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass the path of a .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte offset {exc.start})",
                          hint="save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(
                f"unsupported config format {path.suffix!r}", hint="use .toml or .yaml"
            )
    except ConfigError:
        raise
    except Exception as exc:  # TOML and YAML parsers raise their own error types
        raise ConfigError(f"cannot parse {path}: {exc}", hint="fix the file's syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must hold tables ([model], [task], [train]), not {type(data).__name__}",
                          hint="see configs/tiny/*.toml for the shape")
    return RunConfig.from_dict(data, source=path.name)
