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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError
from lifelong.neural.config import ModelConfig


@dataclass
class TaskConfig:
    """A task from ``lifelong.data.registry.build_task(name, options)``."""

    name: str = "mqar"
    options: dict[str, Any] = field(default_factory=dict)


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
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError(
                "train.steps, train.batch_size must be >= 1 and train.seq_len >= 2",
                hint="fix the [train] table of the config",
            )


@dataclass
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

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
        return cls(name=str(name), **parts)


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table", hint="see configs/tiny/*.toml for the shape")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {unknown}", hint=f"known keys: {', '.join(sorted(known))}"
        )
    return kind(**values)


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a ``.toml``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass the path of a .toml file")
    text = path.read_text(encoding="utf-8")
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
    return RunConfig.from_dict(data, source=path.name)
