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
    "transformer", "swa", "deltanet", "lmm", "mac", "mag", "mal", "hope", "hope_attention", "ttt",
)
TTT_MODES = ("e2e", "dynamic_eval", "off")


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
    - ``ttt``: E2E-TTT (arXiv 2512.23675): sliding-window attention with QK-norm; the last
      ``ttt_layers`` blocks (default a quarter) add a dynamic MLP that is trained on the
      context itself, one SGD step per mini-batch of ``ttt_mini_batch`` tokens
      (``lifelong.neural.layers.ttt``). ``ttt_mode``: ``e2e`` (meta-learned: training
      differentiates through the inner steps), ``dynamic_eval`` (trained without inner
      steps, which run only in eval mode) or ``off`` (the same SWA model, never updated).

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
    # E2E-TTT: inner mini-batch b (<= window), blocks with a dynamic MLP (None: a quarter,
    # at least one), the inner SGD learning rate η and the inner gradient's global-norm clip
    # (0: none), and which of the paper's ablations runs.
    ttt_mini_batch: int = 8
    ttt_layers: int | None = None
    ttt_lr: float = 1.0
    ttt_clip: float = 1.0
    ttt_mode: str = "e2e"

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
        self._check_ttt()

    @property
    def ttt_suffix(self) -> int:
        """How many of the last blocks learn at test time (``ttt`` kind)."""
        return self.ttt_layers if self.ttt_layers is not None else max(1, self.n_layers // 4)

    def _check_ttt(self) -> None:
        if self.ttt_mode not in TTT_MODES:
            raise ConfigError(f"unknown model.ttt_mode {self.ttt_mode!r}", hint=f"use one of: {', '.join(TTT_MODES)}")
        if self.ttt_mini_batch < 1 or self.ttt_lr < 0 or self.ttt_clip < 0:
            raise ConfigError("model.ttt_mini_batch must be >= 1, ttt_lr and ttt_clip >= 0",
                              hint="e.g. ttt_mini_batch = 16, ttt_lr = 1.0, ttt_clip = 1.0")
        if self.kind != "ttt":
            return
        if not 1 <= self.ttt_suffix <= self.n_layers:
            raise ConfigError(f"model.ttt_layers must lie in 1 … n_layers ({self.n_layers}), got {self.ttt_layers}",
                              hint="leave it unset for the paper's last quarter")
        if self.ttt_mini_batch > self.window:
            raise ConfigError(f"model.ttt_mini_batch {self.ttt_mini_batch} exceeds the window {self.window}",
                              hint="E2E-TTT needs window >= mini-batch, so a mini-batch sees itself")

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
