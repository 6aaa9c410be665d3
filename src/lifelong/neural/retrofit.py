"""Hope-Attention retrofitted into a pretrained model: the embedded Gemma learns in context.

Nested Learning (arXiv 2512.24695) §7.3, *ad-hoc level stacking*: a CMS level's
initial state need not be learned from scratch — start it from a pretrained
MLP, MLP^(f_i)_0 = MLP_pretrained_i, and let it learn at its own frequency from
there. With every inner learning rate at 0 the model *is* the pretrained model.

Here the chosen decoder layers of Gemma 3 270M (loaded through transformers,
``lifelong.llm.hf``) get a CMS in place of their MLP. Each CMS has one level
per chunk size; every level starts as that layer's pretrained MLP, and the
levels are joined head-wise (Eq. 74) by a weighted mean, so the block computes
exactly the pretrained MLP until a level writes. The stream is read in steps
of the smallest chunk; after each step the gradient of the model's next-token
loss on that step is taken for every level's current weights (nothing else in
Gemma moves), and each level writes at the end of its own chunk (Eq. 71), with
a fixed learning rate per level. The weights a session has written are its
state (``RetrofitState``: save / load / stack / index like any state here);
the KV cache of the current context rides along in ``Session``.

Python::

    gemma = HopeGemma("local", RetrofitConfig(layers=(14, 15, 16, 17), chunk_sizes=(16, 64)))
    session = gemma.session()
    gemma.read(session, "material to learn …")           # learns while it reads
    gemma.new_context(session)                             # drop the context, keep the weights
    print(gemma.answer(session, "A question:", max_new_tokens=8))

As a model spec for the ``lifelong`` commands: ``hf-cms:local?layers=14-17&levels=16,64&lr=1e-5``
(``RetrofitLLM``: every ``complete`` reads its prompt into the weights, in a
fresh context, so what a session learnt outlives its context window).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError, ContextOverflowError, ModelError
from lifelong.neural.layers.cms import CMSConfig, CMSState, ContinuumMemory
from lifelong.neural.streaming import StateBundle, map_tensors


@dataclass
class RetrofitConfig:
    layers: tuple[int, ...] = (14, 15, 16, 17)  # decoder layers whose MLP becomes a CMS; (): all
    chunk_sizes: tuple[int, ...] = (16, 64)  # one CMS level per chunk size, in every chosen layer
    lr: float | tuple[float, ...] = 1e-5  # η^(ℓ) per level, fixed; 0: that level never moves

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)

    def cms(self, dim: int, hidden: int) -> CMSConfig:
        return CMSConfig(dim=dim, hidden=hidden, chunk_sizes=self.chunk_sizes, variant="headwise",
                         activation="gelu_tanh", lr=self.lr, learn_lr=False, norm=False, residual=False)


@dataclass
class RetrofitState(StateBundle):
    """The weights a session has written: one CMS state per retrofitted layer."""

    cms: list
    fingerprint: str = ""

    FORMAT_NAME = "lifelong.neural.RetrofitState"


@dataclass
class Session:
    """One reader's stream: its CMS weights, the KV cache of its context, the open step."""

    state: RetrofitState
    cache: Any = None  # transformers' cache of the current context, at the open step's start
    open_ids: Tensor | None = None
    seen: int = 0  # tokens read in the current context
    learn_s: float = 0.0
    answer_s: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes this session carries: its written weights, gradient sums and KV cache."""
        total = self.state.nbytes
        if self.cache is not None:
            for layer in getattr(self.cache, "layers", []):
                for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                    if isinstance(t, Tensor):
                        total += t.numel() * t.element_size()
        return total


class CMSFeedForward(nn.Module):
    """Stands in a decoder layer's ``mlp``: the layer's CMS read with ``self.state``."""

    def __init__(self, mlp: nn.Module, config: RetrofitConfig) -> None:
        super().__init__()
        gate, up, down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
        self.cms = ContinuumMemory(config.cms(gate.shape[1], gate.shape[0]))
        self.cms.load_mlp(gate.T, up.T, down.T)
        self.cms.requires_grad_(False)
        self.state: CMSState | None = None

    def forward(self, x: Tensor) -> Tensor:
        state = self.state if self.state is not None else self.cms.init_state(x.shape[0])
        return self.cms(x, state)


def parse_layers(text: str) -> tuple[int, ...]:
    """``14-17``, ``3,8,17`` or ``all`` (→ ``()``) → layer indices."""
    text = text.strip()
    if text == "all":
        return ()
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError as exc:
        raise ConfigError(f"bad layers {text!r}", hint="e.g. layers=14-17 or layers=3,8,17 or all") from exc
    if not out or min(out) < 0:
        raise ConfigError(f"bad layers {text!r}", hint="e.g. layers=14-17 or layers=3,8,17 or all")
    return tuple(sorted(set(out)))


def model_folder(path: str) -> Path:
    """A transformers model folder for ``path`` (``local``: the embedded Gemma, converted once)."""
    from lifelong.llm.hf import model_folder as hf_model_folder

    return hf_model_folder(path)


class HopeGemma:
    """A pretrained causal LM whose chosen MLPs learn in context (see the module doc)."""

    def __init__(self, path: str = "local", config: RetrofitConfig | None = None,
                 device: str = "cpu", model: nn.Module | None = None, tokenizer: Any = None) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError("the retrofit needs the [hf] extra", hint="pip install 'lifelong[hf]'") from exc
        self.config = config or RetrofitConfig()
        if model is None:
            folder = model_folder(path)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        layers = self.model.model.layers
        if not self.config.layers:
            self.config.layers = tuple(range(len(layers)))
        if max(self.config.layers) >= len(layers):
            raise ConfigError(f"layer {max(self.config.layers)} does not exist",
                              hint=f"the model has {len(layers)} layers (0-{len(layers) - 1})")
        self.ffns: list[CMSFeedForward] = []
        for i in self.config.layers:
            ffn = CMSFeedForward(layers[i].mlp, self.config).to(device)
            layers[i].mlp = ffn
            self.ffns.append(ffn)
        self.step = self.ffns[0].cms.config.step
        import inspect

        # transformers ≥ 5.24 names the KV cache argument ``cache``; earlier, ``past_key_values``
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _run(self, ids: Tensor, cache: Any) -> Tensor:
        return self.model(input_ids=ids, use_cache=True, **{self._cache_arg: cache}).logits

    # --- sessions -----------------------------------------------------------------------

    def fingerprint(self) -> str:
        return self.ffns[0].cms.config.fingerprint() + "-" + "-".join(map(str, self.config.layers))

    def session(self, batch_size: int = 1) -> Session:
        return Session(RetrofitState([f.cms.init_state(batch_size) for f in self.ffns],
                                     fingerprint=self.fingerprint()))

    def new_context(self, session: Session) -> None:
        """Forget the context (KV cache), keep what the weights learnt; open gradient sums
        are kept too, so the levels' cadence runs on over the whole stream."""
        session.cache, session.open_ids, session.seen = None, None, 0

    def _set(self, states: Sequence[CMSState] | None) -> None:
        for ffn, s in zip(self.ffns, states or [None] * len(self.ffns)):
            ffn.state = s

    # --- reading: the in-context learning loop ---------------------------------------------

    @torch.no_grad()
    def feed(self, session: Session, ids: Tensor, learn: bool = True) -> Tensor:
        """Read ``ids [B, T]`` into the session; returns their logits. With ``learn`` the
        CMS levels learn as they read (Eq. 71); without, they only read."""
        from transformers import DynamicCache

        t0 = time.perf_counter()
        ids = ids.to(self.device)
        open_ids = session.open_ids
        n_old = 0 if open_ids is None else open_ids.shape[1]
        if n_old:
            ids = torch.cat([open_ids, ids], dim=1)
        cache = session.cache if session.cache is not None else DynamicCache(config=self.model.config)
        states = session.state.cms
        T = ids.shape[1]
        outs = []
        if not learn:
            self._set(states)
            logits = self._run(ids, cache)
            session.cache, session.open_ids = cache, None
            session.seen += T
            session.answer_s += time.perf_counter() - t0
            return logits[:, n_old:]
        start = 0
        for start in range(0, T, self.step):
            chunk = ids[:, start : start + self.step]
            closes = chunk.shape[1] == self.step and start + self.step < T
            snapshot = None if closes else copy.deepcopy(cache)  # the open step is read again
            with torch.enable_grad():
                handles = [map_tensors(s, lambda t: t) for s in states]
                handles = [
                    _with_weights(s, tuple(tuple(w.detach().requires_grad_(True) for w in ws)
                                           for ws in s.weights))
                    for s in handles
                ]
                self._set(handles)
                logits = self._run(chunk, cache)
                if closes:
                    target = ids[:, start + 1 : start + self.step + 1]
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="sum")
                    weights = [w for s, f in zip(handles, self.ffns) for w in f.cms.fast_weights(s)]
                    grads = list(torch.autograd.grad(loss, weights))
                    new, i = [], 0
                    for s, f in zip(handles, self.ffns):
                        n = len(f.cms.fast_weights(s))
                        new.append(f.cms.learn(s, grads[i : i + n], self.step))
                        i += n
                    states = [map_tensors(s, lambda t: t.detach()) for s in new]
            outs.append(logits.detach())
            _detach_cache(cache)  # what earlier steps computed is data for later gradients
            if not closes:
                cache = snapshot
                break
        self._set(None)
        session.state = RetrofitState(states, fingerprint=session.state.fingerprint)
        session.cache = cache
        session.open_ids = ids[:, start:]
        session.seen += T - n_old
        session.learn_s += time.perf_counter() - t0
        return torch.cat(outs, dim=1)[:, n_old:]

    def read(self, session: Session, text: str, learn: bool = True) -> int:
        """Tokenize ``text`` (no BOS after the first read of a context) and feed it; tokens read."""
        ids = self.encode(text, bos=session.seen == 0 and session.open_ids is None)
        self.feed(session, ids, learn=learn)
        return int(ids.shape[1])

    def encode(self, text: str, bos: bool = True) -> Tensor:
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=bos)["input_ids"]
        return ids.to(self.device)

    @torch.no_grad()
    def answer(self, session: Session, prompt: str, max_new_tokens: int = 16,
               stop: Sequence[str] | None = None) -> str:
        """Greedy continuation of ``prompt`` after the session's context, with the session's
        weights; the session itself is left as it was (answers are not learnt)."""
        t0 = time.perf_counter()
        probe = Session(state=session.state, cache=copy.deepcopy(session.cache),
                        open_ids=session.open_ids, seen=session.seen)
        ids = self.encode(prompt, bos=probe.seen == 0 and probe.open_ids is None) if prompt else None
        if ids is None or ids.shape[1] == 0:  # continue right after what was read
            if probe.open_ids is None or probe.open_ids.shape[1] == 0:
                raise ConfigError("nothing to continue: the prompt is empty and nothing was read",
                                  hint="pass a prompt")
            ids, probe.open_ids = probe.open_ids, None  # the open step is not in the cache yet
            probe.seen -= ids.shape[1]
        logits = self.feed(probe, ids, learn=False)
        out: list[int] = []
        eos = getattr(self.tokenizer, "eos_token_id", None)
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            if nxt == eos:
                break
            out.append(nxt)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if stop and any(s in text for s in stop):
                break
            logits = self.feed(probe, torch.tensor([[nxt]], device=self.device), learn=False)
        session.answer_s += time.perf_counter() - t0
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        for s in stop or []:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text


def _detach_cache(cache: Any) -> None:
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, Tensor) and t.requires_grad:
                setattr(layer, name, t.detach())


def _with_weights(state: CMSState, weights: tuple) -> CMSState:
    import dataclasses

    return dataclasses.replace(state, weights=weights)


# --------------------------------------------------------------------------- as a continual learner


@dataclass(frozen=True)
class LearnerAnswer:
    text: str
    context_tokens: int = 0


@dataclass(frozen=True)
class LearnerMemory:
    tokens: int = 0  # learnt text put into every query's context
    bytes: int = 0  # everything kept between tasks (the CMS levels' state)


class RetrofitLearner:
    """The retrofitted Gemma as a learner of the continual-learning harness
    (``lifelong.continual``'s ``Learner`` protocol, by duck typing: this package sits
    below it): ``learn(task)`` reads a task's material while the CMS levels learn,
    ``answer(query)`` answers greedily within the query's token budget, ``memory()``
    says what it carries.

    ``keep_context=False`` (the default, learner ``hope-gemma``) answers in a fresh
    context: whatever the learner knows about earlier material is in its weights.
    ``True`` (``hope-gemma+icl``) also keeps the material read so far in the context
    (in-context learning plus the CMS)."""

    def __init__(self, gemma: HopeGemma, keep_context: bool = False, stop: Sequence[str] = ("\n",)) -> None:
        self.gemma = gemma
        self.keep_context = keep_context
        self.name = "hope-gemma+icl" if keep_context else "hope-gemma"
        self.stop = list(stop)
        self.session = gemma.session()
        self.material_tokens = 0

    def learn(self, task: Any) -> None:
        g = self.gemma
        if not self.keep_context:
            g.new_context(self.session)
        text = task.material.strip() + "\n\n"
        self.material_tokens += g.read(self.session, text, learn=True)

    def answer(self, query: Any, max_tokens: int | None = None) -> LearnerAnswer:
        g = self.gemma
        budget = int(max_tokens if max_tokens is not None else getattr(query, "max_tokens", 16))
        probe = self.session if self.keep_context else Session(state=self.session.state)
        text = g.answer(probe, query.prompt, max_new_tokens=budget, stop=self.stop)
        if probe is not self.session:
            self.session.answer_s += probe.answer_s
        n = len(g.tokenizer.encode(query.prompt, add_special_tokens=False))
        return LearnerAnswer(text.strip(), n + (self.session.seen if self.keep_context else 0))

    def memory(self) -> LearnerMemory:
        return LearnerMemory(tokens=self.session.seen if self.keep_context else 0, bytes=self.session.nbytes)


# --------------------------------------------------------------------------- as an LLM


class RetrofitLLM:
    """``hf-cms:PATH?layers=…&levels=…&lr=…``: the ``LLM`` protocol over ``HopeGemma``.

    Every ``complete`` starts a fresh context, reads the prompt while learning, and
    answers greedily; the weights it learnt stay for the next call (``reset()``
    returns to the pretrained model)."""

    def __init__(self, path: str, config: RetrofitConfig, context_window: int | None = None,
                 device: str = "cpu") -> None:
        t0 = time.perf_counter()
        self.gemma = HopeGemma(path, config, device=device)
        self.load_s = time.perf_counter() - t0
        self.session_state = self.gemma.session()
        cfg_window = getattr(self.gemma.model.config, "max_position_embeddings", None) or 4096
        self.context_window = int(context_window or min(cfg_window, 32768))
        self.name = f"hope-gemma({path})"

    def reset(self) -> None:
        self.session_state = self.gemma.session()

    def count_tokens(self, text: str) -> int:
        return len(self.gemma.tokenizer.encode(text, add_special_tokens=False))

    def complete(self, prompt: Any, *, max_tokens: int = 256, stop: Sequence[str] | None = None,
                 temperature: float = 0.0, seed: int | None = None,
                 tools: Sequence[dict[str, Any]] | None = None) -> Any:
        from lifelong.llm.base import Completion, check_messages, render_messages

        check_messages(prompt)
        if tools:
            raise ConfigError("the hf-cms backend has no native tool calls",
                              hint="use the session's text tool protocol")
        text = prompt if isinstance(prompt, str) else render_messages(prompt) + "\nassistant:"
        n_prompt = self.count_tokens(text) + 1
        if n_prompt >= self.context_window:
            raise ContextOverflowError(f"prompt is {n_prompt} tokens; the context window is "
                                       f"{self.context_window}", hint="shorten the prompt")
        t0 = time.perf_counter()
        g = self.gemma
        session = self.session_state
        g.new_context(session)
        g.read(session, text, learn=True)
        answer = g.answer(session, "", max_new_tokens=max(1, min(max_tokens, self.context_window - n_prompt)),
                          stop=stop)
        n_out = self.count_tokens(answer)
        finish = "length" if n_out >= max_tokens else "stop"
        return Completion(text=answer, prompt_tokens=n_prompt, completion_tokens=n_out,
                          finish_reason=finish, latency_s=time.perf_counter() - t0)

    def close(self) -> None:
        self.gemma = None

    def __repr__(self) -> str:
        return f"RetrofitLLM({self.name!r})"


def open_spec(target: str, query: str, spec: str) -> RetrofitLLM:
    """The ``hf-cms:`` model spec (registered with ``lifelong.llm.spec``)."""
    from urllib.parse import parse_qsl

    opts = dict(parse_qsl(query, keep_blank_values=True))
    known = {"layers", "levels", "lr", "ctx", "device"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} in model spec {spec!r}",
                          hint="known options: " + ", ".join(sorted(known)))
    if not target:
        raise ConfigError("hf-cms: needs a path", hint="hf-cms:local or hf-cms:/path/to/model")
    try:
        levels = tuple(int(x) for x in opts.get("levels", "16,64").split(","))
        lr_text = opts.get("lr", "1e-5").split(",")
        lr: float | tuple[float, ...] = float(lr_text[0]) if len(lr_text) == 1 else tuple(map(float, lr_text))
        ctx = int(opts["ctx"]) if "ctx" in opts else None
    except ValueError as exc:
        raise ConfigError(f"bad option value in {spec!r}: {exc}",
                          hint="e.g. hf-cms:local?layers=14-17&levels=16,64&lr=1e-5") from exc
    layers = parse_layers(opts.get("layers", "14-17"))
    return RetrofitLLM(target, RetrofitConfig(layers=layers, chunk_sizes=levels, lr=lr),
                       context_window=ctx, device=opts.get("device", "cpu"))


def _register() -> None:
    from lifelong.llm.spec import register_backend

    register_backend("hf-cms", open_spec)


_register()
