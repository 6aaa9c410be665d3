"""The causal-LM shell every model here shares: embedding, blocks, norm, head.

A block is a list of pre-norm residual sublayers. Its sequence mixers differ by
model kind (``ModelConfig.kind``); every block ends with a SwiGLU MLP::

    transformer   [attention]                       deltanet  [Gated DeltaNet]
    swa           [sliding-window attention]        lmm       [neural memory]
    mac           [memory as context]               mag       [memory as gate]
    mal           [neural memory, sliding-window attention]

Every mixer has the same contract, ``mixer(x, state) -> (y, state)`` with
``state=None`` meaning "start of a sequence". The model's state is the list of
its mixers' states, so ``forward(ids, state)`` continues a sequence exactly
where the last call stopped: ``stream`` and ``generate`` are built on that, and
models whose mixers keep fixed-size states (sliding window, DeltaNet, neural
memory) run in constant memory however long the stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.neural.attention import Attention
from lifelong.neural.config import ModelConfig
from lifelong.neural.deltanet import GatedDeltaNet
from lifelong.neural.layers import titans
from lifelong.neural.pretrained import PretrainedMixin

LMState = list[list[Any]]


class MLP(nn.Module):
    """SwiGLU: silu(x W1) * (x W3), projected back by W2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _mal(c: ModelConfig) -> list[nn.Module]:
    # The memory compresses the past, then attention looks closely at the window.
    swa = Attention(c.dim, c.n_heads, c.window, c.n_persistent, c.rope_base)
    return [titans.MemoryLayer(c), swa]


# The registry of model kinds: kind -> the sequence mixers of one block, in order.
# ``config.MODEL_KINDS`` names the same kinds (a test keeps the two in step).
MIXER_BUILDERS: dict[str, Callable[[ModelConfig], list[nn.Module]]] = {
    "transformer": lambda c: [Attention(c.dim, c.n_heads, window=None, rope_base=c.rope_base)],
    "swa": lambda c: [Attention(c.dim, c.n_heads, window=c.window, rope_base=c.rope_base)],
    "deltanet": lambda c: [GatedDeltaNet(c.dim, c.n_heads, c.conv_size, c.deltanet_chunk)],
    "lmm": lambda c: [titans.MemoryLayer(c)],
    "mac": lambda c: [titans.MACLayer(c)],
    "mag": lambda c: [titans.MAGLayer(c)],
    "mal": _mal,
}


def build_mixers(config: ModelConfig) -> list[nn.Module]:
    """The sequence mixers of one block, in order."""
    return MIXER_BUILDERS[config.kind](config)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mixers = nn.ModuleList(build_mixers(config))
        self.mixer_norms = nn.ModuleList(nn.RMSNorm(config.dim) for _ in self.mixers)
        self.mlp_norm = nn.RMSNorm(config.dim)
        self.mlp = MLP(config.dim, config.mlp_hidden)

    def forward(self, x: Tensor, state: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        state = state or [None] * len(self.mixers)
        new_state = []
        for norm, mixer, s in zip(self.mixer_norms, self.mixers, state):
            y, s = mixer(norm(x), s)
            x = x + y
            new_state.append(s)
        return x + self.mlp(self.mlp_norm(x)), new_state


def default_mlp_hidden(dim: int) -> int:
    return max(8, round(8 * dim / 3 / 8) * 8)


class CausalLM(PretrainedMixin, nn.Module):
    """``save_pretrained(folder)`` / ``CausalLM.from_pretrained(folder)``: config.json +
    model.safetensors (``lifelong.neural.pretrained``)."""

    config_class = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.mlp_hidden is None:
            config = dataclasses.replace(config, mlp_hidden=default_mlp_hidden(config.dim))
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    def forward(self, input_ids: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        """Logits ``[B, T, vocab]`` for ``input_ids [B, T]`` and the state after them."""
        x = self.embed(input_ids)
        state = state or [None] * len(self.blocks)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block(x, s)
            new_state.append(s)
        return self.head(self.norm(x)), new_state

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def stream(
        self, chunks: Iterable[Tensor], state: LMState | None = None
    ) -> Iterator[tuple[Tensor, LMState]]:
        """Feed a long sequence a chunk at a time; yields (logits of the chunk, state)."""
        for chunk in chunks:
            logits, state = self(chunk, state)
            yield logits, state

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        state: LMState | None = None,
        prefill_chunk: int | None = None,
    ) -> Tensor:
        """Continue ``input_ids [B, T]``; returns the prompt followed by the new tokens.

        ``temperature=0`` is greedy. The prompt is read in chunks of
        ``prefill_chunk`` tokens (all at once if None) and each new token is one
        ``forward`` call that carries the state, so no token is ever re-read.
        """
        chunk = prefill_chunk or max(1, input_ids.shape[1])
        logits = None
        for s in range(0, input_ids.shape[1], chunk):
            logits, state = self(input_ids[:, s : s + chunk], state)
        out = [input_ids]
        for i in range(max_new_tokens):
            last = logits[:, -1].float()
            if temperature <= 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                last = last / temperature
                if top_k is not None:
                    kth = last.topk(min(top_k, last.shape[-1]), dim=-1).values[:, -1:]
                    last = last.masked_fill(last < kth, float("-inf"))
                nxt = torch.multinomial(last.softmax(-1), 1, generator=generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits, state = self(nxt, state)
        return torch.cat(out, dim=1)


def build_model(config: ModelConfig) -> CausalLM:
    """Build the model; with ``param_budget`` set, solve the MLP width to meet it.

    Parameters grow linearly with the SwiGLU width (3 * dim * hidden per block),
    so one probe build gives the rest of the model's size and the width follows.
    """
    if config.param_budget is None or config.mlp_hidden is not None:
        return CausalLM(config)
    probe = CausalLM(dataclasses.replace(config, mlp_hidden=8))
    per_unit = 3 * config.dim * config.n_layers
    rest = probe.num_params() - 8 * per_unit
    hidden = round((config.param_budget - rest) / per_unit / 8) * 8
    if hidden < 8:
        raise ConfigError(
            f"{config.kind}: the model without MLPs already has {rest:,} parameters, "
            f"more than param_budget {config.param_budget:,}",
            hint="raise param_budget or shrink dim / n_layers",
        )
    return CausalLM(dataclasses.replace(config, mlp_hidden=hidden))


# --------------------------------------------------------------------------- fair comparison
# Baselines are matched in size: the same ``param_budget`` in each config, and
# ``build_model`` solves each model's MLP width to meet it.


def param_counts(configs: dict[str, ModelConfig]) -> dict[str, int]:
    """Parameters of each named model config, as built (tied weights counted once)."""
    out = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        out[name] = build_model(cfg).num_params()
    return out


def check_matched(counts: dict[str, int], tolerance: float = 0.10) -> None:
    """Raise ``ConfigError`` unless every count is within ``tolerance`` of their median."""
    values = sorted(counts.values())
    median = values[len(values) // 2]
    off = {k: v for k, v in counts.items() if abs(v - median) > tolerance * median}
    if off:
        raise ConfigError(
            f"parameter counts differ by more than {tolerance:.0%} from the median {median:,}: "
            + ", ".join(f"{k}={v:,}" for k, v in off.items()),
            hint="give every config the same model.param_budget (and no explicit mlp_hidden)",
        )


def matched(config: ModelConfig, budget: int) -> ModelConfig:
    """``config`` with its MLP width solved for ``budget`` parameters (as ``build_model`` does)."""
    model: CausalLM = build_model(dataclasses.replace(config, param_budget=budget, mlp_hidden=None))
    return model.config


def state_nbytes(state: Any) -> int:
    """Bytes held by a (nested) model state: what inference carries between calls."""
    if state is None or isinstance(state, (int, float, str)):
        return 0
    if isinstance(state, Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    if dataclasses.is_dataclass(state):  # e.g. the neural memory's MemoryState
        return sum(state_nbytes(getattr(state, f.name)) for f in dataclasses.fields(state))
    return 0
