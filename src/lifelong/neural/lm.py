"""The causal-LM shell every model here shares: embedding, blocks, norm, head.

A block is a list of pre-norm residual sublayers. Its sequence mixers differ by
model kind (``ModelConfig.kind``); every block ends with a SwiGLU MLP, or with
the feed-forward part the kind brings (``FFN_BUILDERS``)::

    transformer   [attention]                       deltanet  [Gated DeltaNet]
    swa           [sliding-window attention]        lmm       [neural memory]
    mac           [memory as context]               mag       [memory as gate]
    mal           [neural memory, sliding-window attention]
    hope          [self-modifying Titans] + CMS     hope_attention  [attention] + CMS

Every mixer has the same contract, ``mixer(x, state) -> (y, state)`` with
``state=None`` meaning "start of a sequence". The model's state is the list of
its mixers' states, so ``forward(ids, state)`` continues a sequence exactly
where the last call stopped: ``stream`` and ``generate`` are built on that, and
models whose mixers keep fixed-size states (sliding window, DeltaNet, neural
memory) run in constant memory however long the stream.

Models that learn in context (a CMS in place of the MLP: Hope, Hope-Attention)
read the stream in steps of the CMS's smallest chunk. After each step the model
takes the gradient of its next-token loss on that step — the next token of the
stream is the label, so no label is ever needed from outside — with respect to
every CMS level's current weights, and each level writes at the end of its own
chunk (Nested Learning, Eq. 71). A step's loss needs the token after it, so the
last step of a call stays open: the state (``InContextState``) is the model's
state at that step's start plus its tokens, and the next call reads the step
again (``forward(ids, state)`` still continues exactly). With gradients enabled
the inner gradients keep their graph (``create_graph``), so training
differentiates through every in-context update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError, StateError
from lifelong.neural.attention import Attention
from lifelong.neural.config import ModelConfig
from lifelong.neural.deltanet import GatedDeltaNet
from lifelong.neural.layers import titans
from lifelong.neural.layers.cms import CMSConfig, CMSState, ContinuumMemory
from lifelong.neural.layers.hope import SelfModConfig, SelfModifyingTitans
from lifelong.neural.pretrained import PretrainedMixin
from lifelong.neural.streaming import StateBundle, map_tensors

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


def cms_config(c: ModelConfig) -> CMSConfig:
    """The CMS of a Hope block: ``cms_chunks`` levels of width ``mlp_hidden``."""
    options: dict[str, Any] = {
        "dim": c.dim, "hidden": c.mlp_hidden, "chunk_sizes": tuple(c.cms_chunks),
        "variant": c.cms_variant, "lr": c.cms_lr, "max_lr": c.cms_max_lr,
    }
    options.update(c.cms_options)
    return CMSConfig(**options)


def selfmod_config(c: ModelConfig) -> SelfModConfig:
    """The self-modifying Titans of a Hope block: one set of memories per attention head."""
    options: dict[str, Any] = {
        "dim": c.dim, "heads": c.n_heads, "chunk_other": c.selfmod_chunk,
        "chunk_memory": c.selfmod_memory_chunk,
    }
    options.update(c.selfmod_options)
    return SelfModConfig(**options)


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
    "hope": lambda c: [SelfModifyingTitans(selfmod_config(c))],
    "hope_attention": lambda c: [Attention(c.dim, c.n_heads, window=None, rope_base=c.rope_base)],
}

# Kinds whose blocks end in their own feed-forward part instead of ``x + MLP(norm(x))``:
# kind -> a module with ``forward(x, state) -> x'`` (residuals and norms inside),
# ``check_state`` and, for in-context learners, ``fast_weights`` and ``learn``.
FFN_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "hope": lambda c: ContinuumMemory(cms_config(c)),
    "hope_attention": lambda c: ContinuumMemory(cms_config(c)),
}


# The sequence mixers whose weight memory writes at test time (``CausalLM.memory_writes``).
WEIGHT_MEMORIES = (titans.MemoryLayer, titans.MACLayer, titans.MAGLayer, SelfModifyingTitans)


def build_mixers(config: ModelConfig) -> list[nn.Module]:
    """The sequence mixers of one block, in order."""
    return MIXER_BUILDERS[config.kind](config)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mixers = nn.ModuleList(build_mixers(config))
        self.mixer_norms = nn.ModuleList(nn.RMSNorm(config.dim) for _ in self.mixers)
        ffn = FFN_BUILDERS.get(config.kind)
        self.own_ffn = ffn is not None
        if ffn is not None:
            self.mlp = ffn(config)  # its state is the block state's last entry
        else:
            self.mlp_norm = nn.RMSNorm(config.dim)
            self.mlp = MLP(config.dim, config.mlp_hidden)

    def forward(self, x: Tensor, state: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        n = len(self.mixers) + int(self.own_ffn)
        state = list(state) if state else [None] * n
        new_state = []
        for norm, mixer, s in zip(self.mixer_norms, self.mixers, state):
            y, s = mixer(norm(x), s)
            x = x + y
            new_state.append(s)
        if self.own_ffn:
            s = self.mlp.check_state(state[-1], x)
            new_state.append(s)
            return self.mlp(x, s), new_state
        return x + self.mlp(self.mlp_norm(x)), new_state


def default_mlp_hidden(dim: int) -> int:
    return max(8, round(8 * dim / 3 / 8) * 8)


@dataclass
class InContextState(StateBundle):
    """The state of a model that learns in context (``CausalLM._forward_in_context``).

    ``blocks``: every block's state at the start of the open step (attention caches,
    self-modifying Titans memories, CMS levels); ``open_ids [B, P]``: the tokens of that
    step, read again by the next call once the token after them is known."""

    blocks: list
    open_ids: Tensor
    fingerprint: str = ""

    FORMAT_NAME = "lifelong.neural.InContextState"


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
        # A CMS in the blocks: the model learns in context (``in_context_updates``
        # False reads with the state's weights and never writes them).
        self.learners = [b.mlp for b in self.blocks if isinstance(b.mlp, ContinuumMemory)]
        self.in_context_updates = bool(self.learners)

    @property
    def memory_writes(self) -> bool:
        """Whether the weight memories in the sequence mixers (Titans, self-modifying
        Titans) write. False: they are read with the weights the state holds and never
        written, the ablation of the same model without its long-term memory. The CMS
        has its own switch, ``in_context_updates``."""
        return all(m.writes for m in self.modules() if isinstance(m, WEIGHT_MEMORIES))

    @memory_writes.setter
    def memory_writes(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, WEIGHT_MEMORIES):
                m.writes = bool(enabled)

    def fingerprint(self) -> str:
        import hashlib
        import json

        blob = json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def forward(self, input_ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits ``[B, T, vocab]`` for ``input_ids [B, T]`` and the state after them."""
        if self.learners and self.in_context_updates:
            if torch.is_inference_mode_enabled():
                # learning in context needs autograd, which inference mode switches off
                # for every tensor made in it: step out, with plain copies of the inputs
                with torch.inference_mode(False), torch.no_grad():
                    ids = input_ids.clone()
                    state = map_tensors(state, lambda t: t.clone()) if state is not None else None
                    return self._forward_in_context(ids, state)
            return self._forward_in_context(input_ids, state)
        if isinstance(state, InContextState):
            raise StateError("this state was made with in-context updates on",
                             hint="keep in_context_updates as it was for the whole stream")
        x = self.embed(input_ids)
        state = state or [None] * len(self.blocks)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block(x, s)
            new_state.append(s)
        return self.head(self.norm(x)), new_state

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- learning in context (CMS models) ----------------------------------------------

    def _forward_in_context(self, input_ids: Tensor, state: InContextState | None) -> tuple[Tensor, Any]:
        step = self.learners[0].config.step
        B = input_ids.shape[0]
        if state is None:
            blocks: list = [None] * len(self.blocks)
            open_ids = input_ids[:, :0]
        else:
            if not isinstance(state, InContextState) or state.fingerprint != self.fingerprint():
                raise StateError("this state does not belong to this model",
                                 hint="pass the state this model returned, or None")
            if state.batch_size != B:
                raise StateError(f"state has batch {state.batch_size}, the input {B}",
                                 hint="InContextState.stack / .index the states to match the batch")
            blocks, open_ids = state.blocks, state.open_ids.to(input_ids.device)
        ids = torch.cat([open_ids, input_ids], dim=1)
        n_old, T = open_ids.shape[1], ids.shape[1]
        # With outer gradients the inner ones keep their graph (unless the CMS is set to
        # first order); then attention must use the math kernel (the fused CPU one has no
        # second derivative).
        outer = torch.is_grad_enabled()
        create = outer and self.learners[0].config.second_order
        if create:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            kernel = sdpa_kernel(SDPBackend.MATH)
        else:
            kernel = nullcontext()
        outs = []
        start = 0
        with kernel:
            for start in range(0, max(T, 1), step):
                chunk = ids[:, start : start + step]
                closes = chunk.shape[1] == step and start + step < T
                with torch.enable_grad():
                    # the inner gradient is taken at this step's own handle on the weights, so
                    # it sees only this step's use of them (earlier steps are data, as a
                    # streaming state must be); with outer gradients the handle is an alias
                    blocks = [_step_handles(b, outer) for b in blocks]
                    logits, after = self._step(chunk, blocks)
                    if closes:
                        after = self._learn(logits, ids[:, start + 1 : start + step + 1], after,
                                            create, keep=outer)
                if not outer:
                    logits, after = logits.detach(), map_tensors(after, lambda t: t.detach())
                outs.append(logits)
                if not closes:
                    break
                blocks = after
        logits = torch.cat(outs, dim=1)[:, n_old:]
        return logits, InContextState(blocks=blocks, open_ids=ids[:, start:], fingerprint=self.fingerprint())

    def _step(self, chunk: Tensor, blocks: list) -> tuple[Tensor, list]:
        x = self.embed(chunk)
        after = []
        for block, s in zip(self.blocks, blocks):
            x, s = block(x, s)
            after.append(s)
        return self.head(self.norm(x)), after

    def _learn(self, logits: Tensor, targets: Tensor, blocks: list, create: bool, keep: bool) -> list:
        """One inner step: ∇ of the step's next-token loss (summed over its tokens) for every
        CMS level's current weights, handed to each CMS (Eq. 71). ``create``: the gradients
        keep their graph; ``keep``: the forward graph is kept for an outer backward."""
        flat = logits.flatten(0, 1)
        flat = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
        loss = F.cross_entropy(flat, targets.flatten(), reduction="sum")
        cms_states = [b[-1] for b in blocks]
        weights = [m.fast_weights(s) for m, s in zip(self.learners, cms_states)]
        grads = torch.autograd.grad(loss, [w for ws in weights for w in ws], create_graph=create,
                                    retain_graph=keep or create)
        out, i = [], 0
        for m, s, ws, b in zip(self.learners, cms_states, weights, blocks):
            g = list(grads[i : i + len(ws)])
            i += len(ws)
            out.append([*b[:-1], m.learn(s, g, logits.shape[1])])
        return out

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


def _step_handles(block_state: Any, alias: bool) -> Any:
    """A block state whose CMS weights are fresh handles for one step's inner gradient:
    aliases (the outer graph goes on through them) or detached leaves (inference)."""
    if not block_state:
        return block_state
    last = block_state[-1]
    if isinstance(last, CMSState):
        def handle(w: Tensor) -> Tensor:
            return w.view_as(w) if alias else w.detach().requires_grad_(True)

        last = dataclasses.replace(last, weights=tuple(tuple(handle(w) for w in ws) for ws in last.weights))
        return [*block_state[:-1], last]
    return block_state


def build_model(config: ModelConfig) -> CausalLM:
    """Build the model; with ``param_budget`` set, solve the MLP width to meet it.

    Parameters grow linearly with the MLP width (3 * dim * hidden per MLP, and a
    CMS has one MLP per level), so two probe builds give the slope and the rest.
    """
    if config.param_budget is None or config.mlp_hidden is not None:
        return CausalLM(config)
    probe = CausalLM(dataclasses.replace(config, mlp_hidden=8))
    per_unit = (CausalLM(dataclasses.replace(config, mlp_hidden=16)).num_params() - probe.num_params()) // 8
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
