"""Run configs: one TOML (or YAML) file says which model, which task, how to train.

A config file has three tables, each a dataclass below with defaults that work::

    name = "mac-tiny"
    [model]            # ModelConfig: which sequence mixer, how big
    kind = "mac"
    [task]             # TaskConfig: a task from lifelong.bench.tasks and its options
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

MODEL_KINDS = ("transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal")


@dataclass
class ModelConfig:
    """A causal LM: embedding, ``n_layers`` blocks of (sequence mixer, MLP), norm, head.

    ``kind`` picks the sequence mixer of every block:

    - ``transformer``: causal softmax attention with RoPE over the whole context.
    - ``swa``: the same attention restricted to the last ``window`` tokens.
    - ``deltanet``: Gated DeltaNet (a linear recurrence with a delta-rule update).
    - ``lmm``: the Titans neural long-term memory alone.
    - ``mac``: Titans memory as context (attention over segments of ``segment_len``).
    - ``mag``: Titans memory as gate (sliding-window attention ‖ memory, gated).
    - ``mal``: Titans memory as layer (memory, then sliding-window attention).
    """

    kind: str = "transformer"
    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    # SwiGLU hidden width. None: 8/3 * dim rounded to a multiple of 8, unless
    # ``param_budget`` is set, in which case it is solved so the whole model has
    # about that many parameters -- the way baselines are matched in size.
    mlp_hidden: int | None = None
    param_budget: int | None = None
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    # Attention windows and Titans structure.
    window: int = 64  # swa, mag, mal: tokens each query sees (itself included)
    segment_len: int = 32  # mac: attention runs within segments of this length
    n_persistent: int = 4  # mac, mag, mal: learnable tokens every query can see
    # Neural memory (lmm, mac, mag, mal); extra options go to NeuralMemoryConfig.
    memory_depth: int = 2
    memory_chunk: int = 16
    memory_options: dict[str, Any] = field(default_factory=dict)
    # Gated DeltaNet.
    conv_size: int = 4
    deltanet_chunk: int = 32

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"unknown model kind {self.kind!r}",
                hint=f"use one of: {', '.join(MODEL_KINDS)}",
            )
        if self.dim % self.n_heads:
            raise ConfigError(
                f"dim {self.dim} is not divisible by n_heads {self.n_heads}",
                hint="pick n_heads that divides dim",
            )
        for name in ("vocab_size", "dim", "n_layers", "window", "segment_len", "memory_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1", hint="set a positive value")


@dataclass
class TaskConfig:
    """A task from ``lifelong.bench.tasks.get_task(name, **options)``."""

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
