"""The model's config: which sequence mixer, how big.

``ModelConfig`` is one table (``[model]``) of a run config
(``lifelong.train.config``). ``MODEL_KINDS`` names the sequence mixers the LM
shell (``lm.py``) can build; each has one builder in ``lm.MIXER_BUILDERS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifelong.errors import ConfigError
from lifelong.validate import check_fields

MODEL_KINDS = (
    "transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "hope", "hope_attention",
)


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
    - ``hope``: self-modifying Titans, and a Continuum Memory System (CMS) in place of
      the MLP (Nested Learning, §8.3).
    - ``hope_attention``: causal softmax attention, and a CMS in place of the MLP.

    The CMS kinds learn in context: the model reads steps of ``min(cms_chunks)`` tokens
    and after each takes one gradient of its next-token loss for every CMS level, which
    writes it at the end of its own chunk (``lifelong.neural.layers.cms``).
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
    # Hope / Hope-Attention: the CMS levels' chunk sizes C^(ℓ) (its update periods, in
    # chain order; ``mlp_hidden`` is each level's width), its variant (sequential,
    # headwise, nested) and inner learning rates; the self-modifying Titans' two chunk
    # sizes. Extra options go to CMSConfig / SelfModConfig.
    cms_chunks: list[int] = field(default_factory=lambda: [16])
    cms_variant: str = "sequential"
    cms_lr: float = 1e-3
    cms_max_lr: float = 1e-2
    cms_options: dict[str, Any] = field(default_factory=dict)
    selfmod_chunk: int = 8
    selfmod_memory_chunk: int = 8
    selfmod_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "model")  # types first: `dim = "32"` is refused here, by name
        if self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"unknown model kind {self.kind!r}",
                hint=f"use one of: {', '.join(MODEL_KINDS)}",
            )
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "window", "segment_len", "memory_chunk",
                     "memory_depth", "conv_size", "deltanet_chunk", "mlp_hidden", "param_budget",
                     "selfmod_chunk", "selfmod_memory_chunk"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {value}", hint="set a positive value")
        if self.n_persistent < 0 or self.rope_base <= 0:
            raise ConfigError("model.n_persistent must be >= 0 and model.rope_base > 0",
                              hint="e.g. n_persistent = 4, rope_base = 10000.0")
        if self.dim % self.n_heads:
            raise ConfigError(
                f"dim {self.dim} is not divisible by n_heads {self.n_heads}",
                hint="pick n_heads that divides dim",
            )
        if self.memory_options:
            self._check_memory_options()
        if not self.cms_chunks or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                          for c in self.cms_chunks):
            raise ConfigError(f"model.cms_chunks must list positive whole chunk sizes, got {self.cms_chunks!r}",
                              hint="e.g. cms_chunks = [16, 64]")
        self.cms_chunks = list(self.cms_chunks)

    def _check_memory_options(self) -> None:
        """Keys and values of ``memory_options`` are NeuralMemoryConfig's own: check
        them now, not when the model is built."""
        from dataclasses import fields

        from lifelong.neural.memory.config import NeuralMemoryConfig

        known = {f.name for f in fields(NeuralMemoryConfig)}
        unknown = sorted(set(self.memory_options) - known)
        if unknown:
            raise ConfigError(f"model.memory_options: unknown keys {unknown}",
                              hint=f"known keys: {', '.join(sorted(known))}")
        try:
            NeuralMemoryConfig(**self.memory_options)
        except ConfigError as exc:  # named as the file names it
            msg = exc.message.replace("NeuralMemoryConfig.", "model.memory_options.")
            hint = (exc.hint or "").replace("NeuralMemoryConfig.", "model.memory_options.")
            raise ConfigError(msg if msg != exc.message else f"model.memory_options: {msg}",
                              hint=hint or None) from None
