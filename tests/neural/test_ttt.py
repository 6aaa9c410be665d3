"""E2E-TTT (``kind = "ttt"``) against a float64 reference written out literally here:
token by token, layer by layer, one SGD step per mini-batch; forward logits, outer
gradients (autograd through the reference, and finite differences), streaming and
states, the ablation modes and config checks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError, StateError
from lifelong.neural.config import ModelConfig
from lifelong.neural.layers.ttt import TTTModelState
from lifelong.neural.lm import build_model

EPS = torch.finfo(torch.float64).eps  # nn.RMSNorm's default eps in float64


def cfg(**over) -> ModelConfig:
    base = {"kind": "ttt", "vocab_size": 23, "dim": 16, "n_layers": 4, "n_heads": 2, "window": 5,
            "ttt_mini_batch": 3, "ttt_layers": 2, "ttt_lr": 0.7, "ttt_clip": 0.2, "mlp_hidden": 24}
    base.update(over)
    return ModelConfig(**base)


def model_for(c: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    m = build_model(c).double()
    with torch.no_grad():  # non-trivial gains so every norm's weight matters
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return m


# --------------------------------------------------------------------------- the reference


def _rms(x, g):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * g


def _rope(x, pos, base):
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    for i in range(half):
        a = pos * base ** (-i / half)
        out[..., i] = x[..., i] * math.cos(a) - x[..., i + half] * math.sin(a)
        out[..., i + half] = x[..., i] * math.sin(a) + x[..., i + half] * math.cos(a)
    return out


def _swiglu(x, gate, up, down):
    return (F.silu(x @ gate) * (x @ up)) @ down


def reference(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[T, V]`` for one sequence ``ids [T]``: tokens read one at a time, each
    learning block's dynamic MLP at W_{i−1} for every token of mini-batch i, then
    W_i = W_{i−1} − η · min(1, clip / ‖∇ℓ_i‖) ∇ℓ_i with ℓ_i the mini-batch's mean
    next-token loss (norm over all learning blocks). Differentiable in the parameters."""
    c = model.config
    P = dict(model.named_parameters())
    L, H, D = c.n_layers, c.n_heads, c.dim
    hd = D // H
    first = L - c.ttt_suffix
    W = {l: [P[f"blocks.{l}.mlp.{n}0"] for n in ("gate", "up", "down")] for l in range(first, L)}
    cache = {l: ([], []) for l in range(L)}  # per layer: keys, values of every token so far
    T, b = ids.shape[0], c.ttt_mini_batch
    all_logits = []
    for start in range(0, T, b):
        batch_logits = []
        for t in range(start, min(start + b, T)):
            h = P["embed.weight"][ids[t]]
            for l in range(L):
                a = _rms(h, P[f"blocks.{l}.mixer_norms.0.weight"])
                q, k, v = (a @ P[f"blocks.{l}.mixers.0.qkv.weight"].T).split(D)
                q, k, v = q.view(H, hd), k.view(H, hd), v.view(H, hd)
                q = _rope(_rms(q, P[f"blocks.{l}.mixers.0.q_norm.weight"]), t, c.rope_base)
                k = _rope(_rms(k, P[f"blocks.{l}.mixers.0.k_norm.weight"]), t, c.rope_base)
                cache[l][0].append(k)
                cache[l][1].append(v)
                lo = max(0, t - c.window + 1)
                heads = []
                for hh in range(H):
                    scores = torch.stack([q[hh] @ cache[l][0][j][hh] for j in range(lo, t + 1)]) / math.sqrt(hd)
                    p = scores.softmax(0)
                    heads.append(sum(p[j - lo] * cache[l][1][j][hh] for j in range(lo, t + 1)))
                h = h + torch.cat(heads) @ P[f"blocks.{l}.mixers.0.proj.weight"].T
                if l >= first:
                    h = h + _swiglu(_rms(h, P[f"blocks.{l}.mlp.dyn_norm.weight"]), *W[l])
                    h = h + _swiglu(_rms(h, P[f"blocks.{l}.mlp.norm.weight"]), P[f"blocks.{l}.mlp.gate"],
                                    P[f"blocks.{l}.mlp.up"], P[f"blocks.{l}.mlp.down"])
                else:
                    m = _rms(h, P[f"blocks.{l}.mlp_norm.weight"])
                    h = h + (F.silu(m @ P[f"blocks.{l}.mlp.w1.weight"].T) * (m @ P[f"blocks.{l}.mlp.w3.weight"].T)) \
                        @ P[f"blocks.{l}.mlp.w2.weight"].T
            batch_logits.append(_rms(h, P["norm.weight"]) @ P["embed.weight"].T)
        all_logits += batch_logits
        if start + b < T:  # the mini-batch is complete and its next token known: learn
            targets = ids[start + 1 : start + b + 1]
            loss = sum(F.cross_entropy(lg[None], tg[None]) for lg, tg in zip(batch_logits, targets)) / b
            flat = [w for l in range(first, L) for w in W[l]]
            grads = torch.autograd.grad(loss, flat, create_graph=True)
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            scale = 1.0
            if c.ttt_clip > 0 and float(norm.detach()) > c.ttt_clip:
                scale = c.ttt_clip / norm  # rescaled to norm ttt_clip (differentiated too)
            i = 0
            for l in range(first, L):
                W[l] = [w - c.ttt_lr * scale * grads[i + n] for n, w in enumerate(W[l])]
                i += 3
    return torch.stack(all_logits)


def _outer_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    # the outer loss: every token's next-token loss under the weights it was predicted with
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]), ids[..., 1:].reshape(-1))


# --------------------------------------------------------------------------- forward / gradients


@pytest.mark.parametrize("clip", [2.0, 0.2, 0.0])
def test_forward_matches_the_literal_reference(clip: float) -> None:
    model = model_for(cfg(ttt_clip=clip))
    ids = torch.randint(0, 23, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, state = model(ids)
    for s in range(2):
        ref = reference(model, ids[s])
        torch.testing.assert_close(logits[s], ref.detach(), rtol=1e-10, atol=1e-10)
    # 14 tokens, b = 3: four mini-batches closed (each learned from), [12, 14) open
    assert state.open_ids.shape == (2, 2)
    assert state.blocks[-1][-1].updates.tolist() == [4, 4]


def test_no_prediction_sees_a_later_token() -> None:
    # a mini-batch is learned from only once the token after it is read: changing token t
    # (on a mini-batch edge and inside one) leaves every earlier prediction as it was
    model = model_for(cfg()).eval()
    ids = torch.randint(0, 23, (1, 16), generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        base, _ = model(ids)
        for t in (3, 6, 7, 10):
            other = ids.clone()
            other[0, t] = (other[0, t] + 1) % 23
            changed, _ = model(other)
            torch.testing.assert_close(changed[:, :t], base[:, :t], rtol=0, atol=0)
            assert (changed[:, t] - base[:, t]).abs().max() > 1e-6


def test_inner_loop_changes_predictions_beyond_the_first_mini_batch() -> None:
    model = model_for(cfg())
    ids = torch.randint(0, 23, (1, 14), generator=torch.Generator().manual_seed(1))
    frozen = model_for(cfg(ttt_lr=0.0))
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = frozen(ids)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=1e-12, atol=1e-12)  # W_0 for batch 0
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-3


def test_outer_gradients_match_autograd_through_the_reference() -> None:
    model = model_for(cfg())
    ids = torch.randint(0, 23, (2, 14), generator=torch.Generator().manual_seed(2))
    logits, _ = model(ids)
    _outer_loss(logits, ids).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    refs = torch.stack([reference(model, ids[s]) for s in range(2)])
    _outer_loss(refs, ids).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-8, atol=1e-10, msg=n)
    # the meta-learned initial weights get a gradient through the inner updates
    assert got["blocks.3.mlp.gate0"].abs().max() > 0


def test_outer_gradient_matches_finite_differences() -> None:
    model = model_for(cfg())
    ids = torch.randint(0, 23, (1, 11), generator=torch.Generator().manual_seed(3))
    logits, _ = model(ids)
    _outer_loss(logits, ids).backward()
    h = 1e-6
    params = dict(model.named_parameters())
    for name, idx in [("blocks.2.mlp.gate0", (1, 2)), ("blocks.3.mlp.down0", (0, 5)),
                      ("blocks.3.mixers.0.qkv.weight", (4, 7)), ("blocks.2.mlp.dyn_norm.weight", (3,))]:
        p = params[name]
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + h
            up = _outer_loss(model(ids)[0], ids).item()
            p[idx] = old - h
            down = _outer_loss(model(ids)[0], ids).item()
            p[idx] = old
        assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), name


def test_first_order_gradients_would_differ() -> None:
    # the second-order terms are not negligible here: the check above can tell them apart
    model = model_for(cfg())
    ids = torch.randint(0, 23, (1, 11), generator=torch.Generator().manual_seed(3))
    logits, _ = model(ids)
    _outer_loss(logits, ids).backward()
    exact = model.blocks[2].mlp.gate0.grad.clone()
    model.zero_grad()
    import lifelong.neural.layers.ttt as ttt_mod

    real = ttt_mod.inner_update

    def first_order(states, factors, lr, clip):  # the inner gradients taken as constants
        return real(states, [[(lf.detach(), rf.detach()) for lf, rf in f] for f in factors], lr, clip)

    ttt_mod.inner_update = first_order
    try:
        logits, _ = model(ids)
        _outer_loss(logits, ids).backward()
    finally:
        ttt_mod.inner_update = real
    assert (model.blocks[2].mlp.gate0.grad - exact).abs().max() > 1e-6


# --------------------------------------------------------------------------- the closed-form inner gradient


def test_closed_form_inner_gradient_matches_autograd_with_second_order() -> None:
    # one dynamic MLP, batched per sequence; ℓ is nonlinear in y so that dy depends on W
    from lifelong.neural.layers.cms import gated_mlp
    from lifelong.neural.layers.ttt import factor_sq_norm, grad_factors

    g = torch.Generator().manual_seed(11)
    B, b, d, hid = 3, 4, 5, 7
    z = torch.randn(B, b, d, generator=g, dtype=torch.float64, requires_grad=True)
    ws = [torch.randn(B, *shape, generator=g, dtype=torch.float64).mul_(0.7).requires_grad_(True)
          for shape in ((d, hid), (d, hid), (hid, d))]
    r = torch.randn(B, b, d, generator=g, dtype=torch.float64, requires_grad=True)
    a, u = z @ ws[0], z @ ws[1]
    s = F.silu(a) * u
    y = s @ ws[2]
    torch.testing.assert_close(y, gated_mlp(z, tuple(ws), "silu"), rtol=0, atol=0)
    loss = (y * r).sum() + 0.5 * (y * y).sum()
    expected = torch.autograd.grad(loss, ws, create_graph=True)
    (dy,) = torch.autograd.grad(loss, y, create_graph=True)
    factors = grad_factors(z, a, u, s, ws[2], dy)
    got = [lf.transpose(1, 2) @ rf for lf, rf in factors]
    for e, gg in zip(expected, got):
        torch.testing.assert_close(gg, e, rtol=1e-12, atol=1e-12)
    # ‖∇W‖² per sequence from the b × b Grams
    for (lf, rf), e in zip(factors, expected):
        torch.testing.assert_close(factor_sq_norm(lf, rf), e.pow(2).flatten(1).sum(1), rtol=1e-12, atol=1e-12)
    # second order: a scalar of the gradients, differentiated to z, W and r both ways
    cs = [torch.randn(e.shape, generator=g, dtype=torch.float64) for e in expected]
    inputs = [z, *ws, r]
    want = torch.autograd.grad(sum((e * c).sum() for e, c in zip(expected, cs)), inputs, retain_graph=True)
    have = torch.autograd.grad(sum((x * c).sum() for x, c in zip(got, cs)), inputs)
    for w_, h_ in zip(want, have):
        torch.testing.assert_close(h_, w_, rtol=1e-11, atol=1e-12)


def test_inner_loop_runs_with_frozen_parameters() -> None:
    # inference with every parameter frozen: the inner gradient still has a graph to follow
    model = model_for(cfg()).eval()
    ids = torch.randint(0, 23, (2, 14), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        want, _ = model(ids)
    model.requires_grad_(False)
    with torch.no_grad():
        got, _ = model(ids)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_inner_update_clips_each_sequence_over_all_blocks() -> None:
    from lifelong.neural.layers.ttt import TTTState, inner_update

    g = torch.Generator().manual_seed(12)
    B, b, d, hid = 2, 3, 4, 6
    shapes = ((d, hid), (d, hid), (hid, d))
    states, factors = [], []
    for _ in range(2):  # two learning blocks
        ws = tuple(torch.randn(B, *sh, generator=g, dtype=torch.float64) for sh in shapes)
        states.append(TTTState(weights=ws, updates=torch.zeros(B, dtype=torch.long)))
        fs = tuple((torch.randn(B, b, sh[0], generator=g, dtype=torch.float64),
                    torch.randn(B, b, sh[1], generator=g, dtype=torch.float64)) for sh in shapes)
        factors.append(fs)
    with torch.no_grad():  # sequence 1's gradient tiny: the clip acts on sequence 0 alone
        for fs in factors:
            for _, rf in fs:
                rf[1] *= 1e-3
    grads = [[lf.transpose(1, 2) @ rf for lf, rf in fs] for fs in factors]
    norm = torch.sqrt(sum(gr.pow(2).flatten(1).sum(1) for gs in grads for gr in gs))
    clip, lr = 1.5, 0.3
    assert norm[0] > clip > norm[1]
    scale = torch.clamp(clip / norm, max=1.0)[:, None, None]
    new = inner_update(states, factors, lr, clip)
    for st, n, gs in zip(states, new, grads):
        for w, w_new, gr in zip(st.weights, n.weights, gs):
            torch.testing.assert_close(w_new, w - lr * scale * gr, rtol=1e-12, atol=1e-12)
        assert n.updates.tolist() == [1, 1]
    unclipped = inner_update(states, factors, lr, 0.0)
    torch.testing.assert_close(unclipped[0].weights[2], states[0].weights[2] - lr * grads[0][2], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- streaming and states


def _stream(model, ids, cuts, state=None):
    outs = []
    with torch.no_grad():
        for a, b in itertools.pairwise(cuts):
            lg, state = model(ids[:, a:b], state)
            outs.append(lg)
    return torch.cat(outs, dim=1), state


def test_split_passes_equal_one_pass_and_states_agree() -> None:
    model = model_for(cfg()).eval()
    ids = torch.randint(0, 23, (2, 29), generator=torch.Generator().manual_seed(4))
    whole, s1 = _stream(model, ids, [0, 29])
    for cuts in ([0, 1, 2, 3, 4, 10, 12, 13, 29], [0, 3, 6, 9, 29], [0, 28, 29]):
        parts, s2 = _stream(model, ids, cuts)
        torch.testing.assert_close(parts, whole, rtol=1e-10, atol=1e-10)
        for w1, w2 in zip(s1.blocks[-1][-1].weights, s2.blocks[-1][-1].weights):
            torch.testing.assert_close(w1, w2, rtol=1e-10, atol=1e-10)
        assert torch.equal(s1.open_ids, s2.open_ids)


def test_state_saves_loads_stacks_and_indexes(tmp_path: Path) -> None:
    model = model_for(cfg()).eval()
    ids = torch.randint(0, 23, (2, 20), generator=torch.Generator().manual_seed(5))
    whole, _ = _stream(model, ids, [0, 20])
    _, mid = _stream(model, ids, [0, 11])
    mid.save(tmp_path / "s.safetensors")
    loaded = TTTModelState.load(tmp_path / "s.safetensors", expect_fingerprint=model.fingerprint())
    rest, _ = _stream(model, ids, [11, 20], state=loaded)
    torch.testing.assert_close(rest, whole[:, 11:], rtol=1e-10, atol=1e-10)
    # one sequence at a time, then the two states stacked into a batch
    singles = [_stream(model, ids[i : i + 1], [0, 11])[1] for i in range(2)]
    stacked = TTTModelState.stack(singles)
    rest2, _ = _stream(model, ids, [11, 20], state=stacked)
    torch.testing.assert_close(rest2, whole[:, 11:], rtol=1e-10, atol=1e-10)
    one, _ = _stream(model, ids[1:], [11, 20], state=mid.index(1))
    torch.testing.assert_close(one, whole[1:, 11:], rtol=1e-10, atol=1e-10)
    with pytest.raises(StateError):
        TTTModelState.load(tmp_path / "s.safetensors", expect_fingerprint="0" * 16)
    other = model_for(cfg(ttt_lr=0.5))
    with pytest.raises(StateError), torch.no_grad():
        other(ids[:, 11:], loaded)


def test_sequences_of_a_batch_learn_independently() -> None:
    model = model_for(cfg()).eval()
    ids = torch.randint(0, 23, (3, 17), generator=torch.Generator().manual_seed(6))
    batch, _ = _stream(model, ids, [0, 17])
    alone, _ = _stream(model, ids[2:], [0, 17])
    torch.testing.assert_close(batch[2:], alone, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- ablations, config


def test_ablation_modes() -> None:
    ids = torch.randint(0, 23, (1, 14), generator=torch.Generator().manual_seed(7))
    e2e, off, dyn = (model_for(cfg(ttt_mode=m)) for m in ("e2e", "off", "dynamic_eval"))
    with torch.no_grad():
        e2e_logits, state = e2e(ids)
        off_logits, off_state = off(ids)
        dyn.train()
        dyn_train, _ = dyn(ids)
        dyn.eval()
        dyn_eval, _ = dyn(ids)
    frozen = model_for(cfg(ttt_lr=0.0))
    with torch.no_grad():
        frozen_logits, _ = frozen(ids)
    torch.testing.assert_close(off_logits, frozen_logits, rtol=1e-10, atol=1e-10)  # off: SWA, W_0 kept
    torch.testing.assert_close(dyn_train, frozen_logits, rtol=1e-10, atol=1e-10)  # training: no inner loop
    torch.testing.assert_close(dyn_eval, e2e_logits, rtol=1e-10, atol=1e-10)  # eval: the inner loop
    assert isinstance(state, TTTModelState) and not isinstance(off_state, TTTModelState)
    with pytest.raises(StateError), torch.no_grad():
        dyn.train()
        dyn(ids, state)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="window"):
        cfg(ttt_mini_batch=8, window=4)
    with pytest.raises(ConfigError, match="ttt_mode"):
        cfg(ttt_mode="maml")
    with pytest.raises(ConfigError, match="ttt_layers"):
        cfg(ttt_layers=5)
    with pytest.raises(ConfigError):
        cfg(ttt_lr=-1.0)
    assert ModelConfig(kind="ttt", n_layers=12).ttt_suffix == 3  # the paper's last quarter
    model = build_model(cfg(ttt_layers=None, n_layers=8))
    learning = [i for i, b in enumerate(model.blocks) if hasattr(b.mlp, "gate0")]
    assert learning == [6, 7]
