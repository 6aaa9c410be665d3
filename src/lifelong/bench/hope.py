"""Hope against the peer ``nested-learning`` (PyPI, Apache-2.0), in one process.

``lifelong bench hope --compare nested-learning`` does two things:

1. **Outputs of the matching component.** Self-modifying Titans (Nested Learning
   Eq. 88/90) exists in both with the same semantics once a few choices are
   aligned: one head over the full width, memory width = model width, GELU,
   η = scale · softplus(M_η(x)) with no bias, α = sigmoid(M_α(x)) with no bias,
   unnormalized values, no output projection. Both layers get the same weights
   and input and run ``T`` tokens (a multiple of both chunk sizes); the report
   gives the largest difference of the outputs and of the memories' final weights.
   The CMS is not compared: the peer writes its CMS in a separate update pass,
   after the outer backward, from a "teach signal" (the outer loss's gradient at
   the head) with gradients stopped, and its levels are LayerNorm + GELU MLPs
   with biases; lifelong's levels write inside the forward pass from the model's
   own next-token gradient and are differentiated through.

2. **Training and inference tokens/s** of a whole model at one configuration:
   the peer's ``HOPEModel(block_variant="hope_selfmod")`` against lifelong's
   ``hope`` kind with the same width, depth, vocabulary, sequence, batch, CMS
   periods and self-modifying chunk sizes. Each side trains the way it is meant to:

   - peer: forward (the self-modifying Titans reads its initial memories; the
     in-context writes happen only in the update pass), cross-entropy, backward,
     AdamW step, then its update pass (``model(tokens, teach_signal=…)`` under
     ``no_grad``) — the peer's default two-pass, stop-gradient recipe;
   - lifelong: forward with in-context writes (self-modifying Titans and CMS),
     cross-entropy, backward through every write (second order), AdamW step.

   Also lifelong with first-order inner gradients (``second_order = false``: the
   in-context writes still happen in the forward pass, the outer gradient does
   not differentiate through their gradients — closer to the peer's stop-grad).
   Inference: the peer's forward under ``no_grad`` (which reads its initial
   memories, no writes); lifelong's forward under ``no_grad`` with in-context
   learning (writes) and without (``in_context_updates = False``).

Repeats of the two sides are interleaved so both see the same machine load; the
ratios are medians of back-to-back pairs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.neural.config import ModelConfig
from lifelong.neural.layers.hope import SelfModConfig, SelfModifyingTitans
from lifelong.neural.lm import build_model


@dataclass
class HopeBenchConfig:
    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 2
    heads: int = 4
    cms_periods: list[int] = field(default_factory=lambda: [16, 64])
    selfmod_chunk: int = 8
    batch: int = 4
    seq: int = 128
    repeats: int = 3
    warmup: int = 1
    eta_scale: float = 1e-3
    seed: int = 0


def _peer():
    try:
        from nested_learning.levels import LevelSpec
        from nested_learning.model import HOPEModel
        from nested_learning.model import ModelConfig as PeerConfig
        from nested_learning.titan.self_modifying import SelfModifyingTitans as PeerSelfMod
        from nested_learning.titan.self_modifying import SelfModifyingTitansConfig
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("nested-learning is not installed",
                          hint="pip install --no-deps 'nested-learning>=0.2' (make test does)") from exc
    return LevelSpec, HOPEModel, PeerConfig, PeerSelfMod, SelfModifyingTitansConfig


# --------------------------------------------------------------------------- 1. outputs


def compare_selfmod(dim: int = 32, T: int = 32, chunk_memory: int = 8, chunk_other: int = 4,
                    eta_scale: float = 0.05, seed: int = 0) -> dict:
    """Max |difference| of outputs and final memories, same weights and input, float64."""
    _, _, _, PeerSelfMod, PeerCfg = _peer()
    torch.manual_seed(seed)
    peer = PeerSelfMod(PeerCfg(dim=dim, eta_scale=eta_scale, chunk_size_other=chunk_other,
                               chunk_size_memory=chunk_memory, objective="l2", stopgrad_vhat=True,
                               use_rank1_precond=True, use_alpha=True, use_skip=True, momentum=0.0,
                               qk_l2_norm=True, adaptive_q=False, local_conv_window=4)).double()
    ours = SelfModifyingTitans(SelfModConfig(
        dim=dim, heads=1, hidden=dim, chunk_memory=chunk_memory, chunk_other=chunk_other, conv_kernel=4,
        activation="gelu", max_lr=eta_scale, lr_activation="softplus", init_lr_logit=0.0,
        init_retention_logit=0.0, normalize_v=False,
    )).double()
    names = {"k": peer.m_k, "v": peer.m_v, "mem": peer.m_memory, "eta": peer.m_eta, "alpha": peer.m_alpha}
    with torch.no_grad():
        ours.conv.copy_(peer.local_conv.weight[:, 0, :])
        ours.to_q.weight.copy_(peer.w_q.weight)
        ours.out.weight.copy_(torch.eye(dim, dtype=torch.double))
        ours.lr_bias.zero_()
        ours.retention_bias.zero_()
        for m, mod in names.items():
            A, B, *S = ours.init[m]
            A[0].copy_(mod.w2.weight.T)
            B[0].copy_(mod.w1.weight.T)
            if S:
                S[0][0].copy_(mod.w_skip.weight.T)
    x = torch.randn(2, T, dim, dtype=torch.double)
    with torch.no_grad():
        y_peer, st_peer = peer.forward_with_updates(x, peer.init_fast_state())
        y_ours, st_ours = ours(x)
    order = ("k", "v", "mem", "eta", "alpha")
    peer_states = {"k": st_peer.k, "v": st_peer.v, "mem": st_peer.memory, "eta": st_peer.eta,
                   "alpha": st_peer.alpha}
    weight_diff = 0.0
    for i, m in enumerate(order):
        ps = peer_states[m]
        run = st_ours.run[i]
        pairs = [(run[0][:, 0], ps.w2.transpose(1, 2)), (run[1][:, 0], ps.w1.transpose(1, 2))]
        if len(run) == 3:
            pairs.append((run[2][:, 0], ps.w_skip.transpose(1, 2)))
        for a, b in pairs:
            weight_diff = max(weight_diff, float((a - b).abs().max()))
    return {"component": "self-modifying Titans (Eq. 88/90)", "dim": dim, "tokens": T,
            "chunk_memory": chunk_memory, "chunk_other": chunk_other,
            "max_abs_diff_output": float((y_peer - y_ours).abs().max()),
            "max_abs_diff_memories": weight_diff,
            "output_scale": float(y_peer.abs().max())}


# --------------------------------------------------------------------------- 2. speed


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _peer_model(cfg: HopeBenchConfig):
    LevelSpec, HOPEModel, PeerConfig, _, _ = _peer()
    levels = [LevelSpec(name=f"cms_{i}", update_period=p) for i, p in enumerate(cfg.cms_periods)]
    return HOPEModel(PeerConfig(
        vocab_size=cfg.vocab_size, dim=cfg.dim, num_layers=cfg.n_layers, heads=cfg.heads,
        titan_level=LevelSpec(name="titan", update_period=cfg.selfmod_chunk), cms_levels=levels,
        block_variant="hope_selfmod", qk_l2_norm=True, self_mod_lr=cfg.eta_scale,
        self_mod_chunk_size=cfg.selfmod_chunk, self_mod_chunk_size_memory=cfg.selfmod_chunk,
    ))


def _ours_model(cfg: HopeBenchConfig, second_order: bool = True):
    return build_model(ModelConfig(
        kind="hope", vocab_size=cfg.vocab_size, dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.heads,
        mlp_hidden=4 * cfg.dim, cms_chunks=list(cfg.cms_periods), selfmod_chunk=cfg.selfmod_chunk,
        selfmod_memory_chunk=cfg.selfmod_chunk, cms_options={"second_order": second_order},
    ))


def measure_speed(cfg: HopeBenchConfig) -> dict:
    """Tokens/s of both sides, training and inference, interleaved repeats."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.seq + 1), generator=gen)
    x, y = ids[:, :-1], ids[:, 1:]
    peer, ours, ours_fo = _peer_model(cfg), _ours_model(cfg), _ours_model(cfg, second_order=False)
    ours_fo.load_state_dict(ours.state_dict())
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-3)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    opt_fo = torch.optim.AdamW(ours_fo.parameters(), lr=1e-3)

    def peer_train() -> None:
        logits = peer(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)
        with torch.no_grad():  # the update pass: teach signal = dL/dh at the head's input
            p = logits.detach().softmax(-1)
            p.scatter_add_(-1, y[..., None], -torch.ones_like(y[..., None], dtype=p.dtype))
            teach = (p / y.numel()) @ peer.lm_head.weight
            peer(x, teach_signal=teach)

    def ours_train() -> None:
        logits, _ = ours(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def ours_train_first_order() -> None:
        logits, _ = ours_fo(x)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        opt_fo.step()
        opt_fo.zero_grad(set_to_none=True)

    @torch.no_grad()
    def peer_infer() -> None:
        peer(x)

    @torch.no_grad()
    def ours_infer() -> None:
        ours(x)

    @torch.no_grad()
    def ours_infer_static() -> None:
        ours.in_context_updates = False
        try:
            ours(x)
        finally:
            ours.in_context_updates = True

    cases = {"train": (peer_train, ours_train), "train_first_order": (peer_train, ours_train_first_order),
             "infer": (peer_infer, ours_infer),
             "infer_static": (peer_infer, ours_infer_static)}
    tokens = cfg.batch * cfg.seq
    out: dict = {"config": asdict(cfg), "params_peer": sum(p.numel() for p in peer.parameters()),
                 "params_lifelong": ours.num_params(), "threads": torch.get_num_threads()}
    for name, (fp, fo) in cases.items():
        for _ in range(cfg.warmup):
            fp()
            fo()
        tp, to = [], []
        for _ in range(cfg.repeats):
            tp.append(_timed(fp))
            to.append(_timed(fo))
        ratios = [a / b for a, b in zip(tp, to)]  # >1: lifelong faster
        out[name] = {"peer_tok_s": tokens / statistics.median(tp), "lifelong_tok_s": tokens / statistics.median(to),
                     "speedup_median_pair": statistics.median(ratios)}
    return out


# --------------------------------------------------------------------------- 3. the retrofit


def measure_retrofit(layers: tuple[int, ...] = (14, 15, 16, 17), levels: tuple[int, ...] = (16, 64),
                     lr: float = 1e-5, tokens: int = 512, path: str = "local") -> dict:
    """The retrofitted Gemma reading ``tokens`` tokens of prose: tokens/s with and without
    in-context updates, and the bytes a session carries (written weights, gradient sums,
    KV cache) — plus the next-token loss of the second half of the text, read after the
    first half, with and without learning: the loss of each token as it is read, before
    any write that could have seen it (does learning from the stream help predict it?)."""
    from lifelong.data.haystack import essay_sentences
    from lifelong.neural.retrofit import HopeGemma, RetrofitConfig

    gemma = HopeGemma(path, RetrofitConfig(layers=tuple(layers), chunk_sizes=tuple(levels), lr=lr))
    ids = gemma.encode(" ".join(essay_sentences()[: tokens // 4]))[:, :tokens]
    out: dict = {"layers": list(layers), "levels": list(levels), "lr": lr, "tokens": int(ids.shape[1]),
                 "threads": torch.get_num_threads()}
    for learn in (False, True):
        session = gemma.session()
        t0 = time.perf_counter()
        logits = gemma.feed(session, ids, learn=learn)
        dt = time.perf_counter() - t0
        half = ids.shape[1] // 2
        nll = F.cross_entropy(logits[0, half:-1].float(), ids[0, half + 1:])
        key = "learning" if learn else "static"
        out[key] = {"tokens_per_s": ids.shape[1] / dt, "session_mb": session.nbytes / 2**20,
                    "weights_mb": session.state.nbytes / 2**20, "nll_second_half": float(nll)}
    return out
