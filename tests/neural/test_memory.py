"""NeuralMemory against the float64 references in ``lifelong.neural.memory.naive``.

Inputs are fresh random draws each run (no fixed seed): the equalities hold for
any input, so a failure prints the seed that produced it.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError, StateError, ValidationError
from lifelong.neural import MemoryState, NeuralMemory, NeuralMemoryConfig
from lifelong.neural.memory import fused, native
from lifelong.neural.memory.naive import naive_forward, naive_mlp, naive_project

DIM = 8


def tiny(**overrides) -> NeuralMemoryConfig:
    base = dict(dim=DIM, heads=2, head_dim=4, depth=2, expansion=2, chunk_size=3,
                conv_kernel=3, max_lr=0.3, max_momentum=0.85)
    base.update(overrides)
    return NeuralMemoryConfig(**base)


@pytest.fixture
def seed() -> int:
    s = random.randrange(2**31)
    torch.manual_seed(s)
    print(f"seed={s}")
    return s


@pytest.fixture(params=["native", "eager"])
def loop(request):
    """Run a test on both implementations of the default chunk loop."""
    on = request.param == "native"
    if on:
        assert native.load() is not None, f"the native chunk loop did not build: {native.error()}"
    with native.use(on):
        yield request.param


def make(cfg: NeuralMemoryConfig, seed: int) -> NeuralMemory:
    m = NeuralMemory(cfg, seed=seed).double()
    with torch.no_grad():  # spread the gates so every term of the recurrence matters
        m.to_gates.weight.normal_(0, 0.5)
        m.to_gates.bias.normal_(0, 1.0)
    return m


def rand_x(B: int, T: int) -> torch.Tensor:
    return torch.randn(B, T, DIM, dtype=torch.float64)


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10, atol: float = 1e-11) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def assert_states_equal(s1: MemoryState, s2: MemoryState) -> None:
    for a, b in zip(s1.weights + s1.momentum, s2.weights + s2.momentum):
        assert_close(a, b)
    assert torch.equal(s1.position, s2.position)
    assert_close(s1.conv, s2.conv)
    assert_close(s1.pending_k, s2.pending_k)
    assert_close(s1.pending_gates, s2.pending_gates)


ALL_GATES = [("chunk", True), ("chunk", False), ("token", True), ("token", False)]
UPDATES = ["bounded", "paper"]


# --- the equations -------------------------------------------------------------


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("gates,momentum", ALL_GATES)
def test_token_recurrence_b1_equals_naive_loop(seed, gates, momentum, update):
    m = make(tiny(chunk_size=1, gates=gates, momentum=momentum, update=update), seed)
    x = rand_x(2, 9)
    y, state = m(x)
    y_ref, W_ref, S_ref = naive_forward(m, x)
    assert_close(y, y_ref)
    for w, w_ref in zip(state.weights, W_ref):
        assert_close(w, w_ref)
    for s, s_ref in zip(state.momentum, S_ref):
        assert_close(s, s_ref)


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("gates,momentum", ALL_GATES)
@pytest.mark.parametrize("depth", [1, 3])
def test_chunked_equals_naive_per_chunk(seed, loop, gates, momentum, depth, update):
    # T = 11 with b = 3: three written chunks and a partial one that is read only
    m = make(tiny(chunk_size=3, gates=gates, momentum=momentum, depth=depth, update=update), seed)
    x = rand_x(2, 11)
    y, state = m(x)
    y_ref, W_ref, S_ref = naive_forward(m, x)
    assert_close(y, y_ref)
    for w, w_ref in zip(state.weights, W_ref):
        assert_close(w, w_ref)
    for s, s_ref in zip(state.momentum, S_ref):
        assert_close(s, s_ref)
    assert state.pending == 2 and int(state.position[0]) == 11


def test_memory_actually_changes_the_output(seed):
    # guard against a vacuous match: with writes, late tokens must differ from a
    # memory that never learns (max_lr → 0)
    m = make(tiny(chunk_size=2), seed)
    x = rand_x(1, 10)
    y, _ = m(x)
    with torch.no_grad():
        m.to_gates.bias.view(3, -1)[0] = -60.0  # θ ≈ 0
        m.to_gates.weight.zero_()
    y_frozen, _ = m(x)
    assert_close(y[:, :2], y_frozen[:, :2])  # the first chunk reads the initial weights
    assert (y[:, 2:] - y_frozen[:, 2:]).abs().max() > 1e-3


# --- state: continuation, save/load, batching ------------------------------------


@pytest.mark.parametrize("gates", ["chunk", "token"])
def test_split_passes_equal_one_pass(seed, loop, gates):
    m = make(tiny(chunk_size=3, gates=gates), seed)
    x = rand_x(2, 17)
    y_full, s_full = m(x)
    cuts = sorted(random.sample(range(1, 17), 4))  # mid-chunk cuts included
    ys, state = [], None
    for lo, hi in zip([0] + cuts, cuts + [17]):
        y, state = m(x[:, lo:hi], state)
        ys.append(y)
    assert_close(torch.cat(ys, dim=1), y_full)
    assert_states_equal(state, s_full)

    # and so do the outer gradients through the carried state (convolution context,
    # pending tokens, weights, momentum)
    grads_full = torch.autograd.grad(y_full.pow(2).sum(), list(m.parameters()))
    loss = sum(y.pow(2).sum() for y in ys)
    for g, g_ref in zip(torch.autograd.grad(loss, list(m.parameters())), grads_full):
        assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def test_forward_equals_retrieve_then_update_per_chunk(seed):
    m = make(tiny(chunk_size=4), seed)
    x = rand_x(2, 12)
    y_full, s_full = m(x)
    state, ys = m.init_state(2), []
    for lo in range(0, 12, 4):
        chunk = x[:, lo:lo + 4]
        ys.append(m.retrieve(chunk, state))
        state = m.update(chunk, state)
    assert_close(torch.cat(ys, dim=1), y_full)
    assert_states_equal(state, s_full)


def test_save_load_continue_is_exact(seed, loop, tmp_path):
    m = make(tiny(chunk_size=3), seed)
    x = rand_x(2, 14)
    y_full, s_full = m(x)
    _, s_half = m(x[:, :7])  # ends mid-chunk: pending tokens must survive the file
    path = tmp_path / "session.safetensors"
    s_half.save(path)
    loaded = MemoryState.load(path, expect_fingerprint=m.config.fingerprint())
    assert_states_equal(loaded, s_half)
    assert_states_equal(m.load_state(path), s_half)
    with pytest.raises(StateError, match="different configuration"):
        make(tiny(chunk_size=4), seed).load_state(path)
    y_rest, s_end = m(x[:, 7:], loaded)
    y_mem, _ = m(x[:, 7:], s_half)
    assert torch.equal(y_rest, y_mem)  # the file round trip is bit-exact
    assert_close(y_rest, y_full[:, 7:])  # and continuing equals one long pass
    assert_states_equal(s_end, s_full)


def test_stack_and_index_batch_states(seed):
    m = make(tiny(chunk_size=2), seed)
    xa, xb = rand_x(1, 6), rand_x(1, 6)
    _, sa = m(xa)
    _, sb = m(xb)
    both = MemoryState.stack([sa, sb])
    nxt = rand_x(2, 5)
    y_both, s_both = m(nxt, both)
    ya, sa2 = m(nxt[:1], sa)
    yb, sb2 = m(nxt[1:], sb)
    assert_close(y_both, torch.cat([ya, yb]))
    assert_states_equal(s_both.index(0), sa2)
    assert_states_equal(s_both.index(1), sb2)


def test_detach_cuts_the_graph_and_keeps_values(seed):
    m = make(tiny(), seed)
    _, state = m(rand_x(1, 7))
    assert state.weights[0].requires_grad
    d = state.detach()
    assert not any(t.requires_grad for t in d.weights + d.momentum)
    assert_states_equal(d, state)


# --- outer-loop gradients ----------------------------------------------------------


@pytest.mark.parametrize("gates,update", [("chunk", "bounded"), ("token", "bounded"), ("chunk", "paper")])
def test_outer_gradients_match_finite_differences(seed, loop, gates, update):
    m = make(tiny(dim=4, heads=1, head_dim=3, chunk_size=2, gates=gates, conv_kernel=2, update=update),
             seed)
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    names = ["to_qkv.weight", "to_gates.weight", "to_gates.bias", "init_weights.0",
             "init_weights.1", "conv"]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()
              if n in names}

    def f(x, *ps):
        out, state = torch.func.functional_call(m, dict(zip(names, ps)), (x,))
        return out.sum() + sum(w.pow(2).sum() for w in state.weights)

    assert torch.autograd.gradcheck(f, (x, *[params[n] for n in names]), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("gates,depth", [("token", 2), ("chunk", 1), ("chunk", 2), ("chunk", 3)])
def test_outer_gradients_match_naive_autograd(seed, loop, gates, depth, update):
    """Gradients of the outputs, final weights and final momentum (the chunk-gate
    path has a hand-written backward; the naive loop is plain autograd). With the
    bounded rule they also flow through the Gram bound into the keys, and through
    (1 − η) into the momentum gate."""
    m = make(tiny(chunk_size=3, gates=gates, depth=depth, update=update), seed)
    x = rand_x(2, 8)
    y, state = m(x)
    loss = y.pow(2).sum() + sum(w.pow(2).sum() for w in state.weights) + sum(
        s.sin().sum() for s in state.momentum)
    fast = torch.autograd.grad(loss, list(m.parameters()))
    y_ref, w_ref, s_ref = naive_forward(m, x)
    loss_ref = y_ref.pow(2).sum() + sum(w.pow(2).sum() for w in w_ref) + sum(
        s.sin().sum() for s in s_ref)
    ref = torch.autograd.grad(loss_ref, list(m.parameters()))
    for g, g_ref in zip(fast, ref):
        assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def naive_read(m: NeuralMemory, x: torch.Tensor) -> torch.Tensor:
    """``retrieve`` from a fresh state, written out: M₀(q) per head, then the output path."""
    B, T, _ = x.shape
    q = naive_project(m, x)[0]
    ys = torch.stack([torch.stack([naive_mlp([w[h] for w in m.init_weights], q[b, h])
                                   for h in range(m.config.heads)]) for b in range(B)])
    ys = ys / torch.sqrt(ys.pow(2).mean(-1, keepdim=True) + 1e-6) * m.out_norm[:, None, :]
    flat = ys.permute(0, 2, 1, 3).reshape(B, T, -1)
    xn = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    return (flat * torch.sigmoid(xn @ m.to_gate.weight.T)) @ m.to_out.weight.T


# 1: one sequence per group; 384 = 2 sequences of 8 × 24 channels, so B = 5 leaves a
# partial last group
@pytest.mark.parametrize("group_elements", [1, 384])
def test_grouped_projection_and_query_only_reads_match_naive_autograd(seed, loop, monkeypatch,
                                                                      group_elements):
    """The projections' pass (``fused.ConvSiluNorm``) runs groups of sequences, and
    ``retrieve`` projects the queries alone: outputs and outer gradients of both
    against plain float64 autograd."""
    monkeypatch.setattr(fused, "_GROUP_ELEMENTS", group_elements)
    monkeypatch.setattr(fused, "_SHORT", 0)  # 8-token pieces would otherwise be one group
    m = make(tiny(chunk_size=3), seed)
    x = rand_x(5, 8)
    y, state = m(x)
    r = m.retrieve(x)
    y_ref, w_ref, _ = naive_forward(m, x)
    r_ref = naive_read(m, x)
    assert_close(y, y_ref)
    assert_close(r, r_ref)
    loss = y.pow(2).sum() + r.sin().sum() + sum(w.pow(2).sum() for w in state.weights)
    loss_ref = y_ref.pow(2).sum() + r_ref.sin().sum() + sum(w.pow(2).sum() for w in w_ref)
    fast = torch.autograd.grad(loss, list(m.parameters()))
    ref = torch.autograd.grad(loss_ref, list(m.parameters()))
    for g, g_ref in zip(fast, ref):
        assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


# --- the memory memorizes, and forgets ---------------------------------------------


@pytest.mark.parametrize("depth,chunk", [(1, 1), (2, 8)])
def test_memory_memorizes_random_pairs_and_alpha_one_erases(seed, depth, chunk):
    cfg = NeuralMemoryConfig(dim=DIM, heads=1, head_dim=32, depth=depth, expansion=2,
                             chunk_size=chunk, momentum=False, max_lr=0.25)
    m = NeuralMemory(cfg, seed=seed).double()
    n_pairs = 16
    k = F.normalize(torch.randn(1, 1, n_pairs, 32, dtype=torch.float64), dim=-1)
    v = F.normalize(torch.randn(1, 1, n_pairs, 32, dtype=torch.float64), dim=-1)
    gates = torch.zeros(1, 1, n_pairs, 3, dtype=torch.float64)
    gates[..., 0], gates[..., 1] = 40.0, -40.0  # θ = max_lr, α ≈ 0

    def error(state: MemoryState) -> float:
        with torch.no_grad():
            return float((m.read_associations(k, state) - v).norm(dim=-1).mean())

    state = m.init_state(1)
    before = error(state)
    # 100 passes: over 40 seeds the worst error was 1.3e-3 (depth 1) and 9e-6 (depth 2);
    # 30 passes left ill-conditioned random key sets of the matrix memory near 0.05.
    for _ in range(100):
        state = m.write_associations(k, v, gates, state)
    # stated bound: mean ‖M(k) − v‖ < 0.05 for unit values (≈ 1 before writing)
    assert before > 0.5 and error(state) < 0.05

    erase = gates.clone()
    erase[..., 0], erase[..., 1] = -40.0, 40.0  # θ ≈ 0, α = 1
    state = m.write_associations(k, v, erase, state)
    assert max(float(w.detach().abs().max()) for w in state.weights) < 1e-12
    assert abs(error(state) - 1.0) < 1e-9  # M(k) = 0: nothing left but ‖v‖


# --- bad input is refused, loudly ----------------------------------------------------


def test_bad_inputs_raise_clear_errors(seed):
    m = make(tiny(), seed)
    with pytest.raises(ValidationError):
        m(torch.randn(2, 5, DIM + 1, dtype=torch.float64))
    with pytest.raises(ValidationError):
        m(torch.randn(5, DIM, dtype=torch.float64))
    bad = rand_x(1, 4)
    bad[0, 2, 1] = float("nan")
    with pytest.raises(ValidationError, match="NaN"):
        m(bad)
    bad[0, 2, 1] = float("inf")
    with pytest.raises(ValidationError):
        m(bad)
    _, state = m(rand_x(2, 4))
    with pytest.raises(StateError, match="batch"):
        m(rand_x(3, 4), state)
    other = make(tiny(chunk_size=5), seed)
    with pytest.raises(StateError, match="configuration"):
        other(rand_x(2, 4), state)
    with pytest.raises(ConfigError):
        NeuralMemoryConfig(gates="sometimes")
    with pytest.raises(ConfigError, match="update"):
        NeuralMemoryConfig(update="delta")
    with pytest.raises(ConfigError, match="value_norm"):
        NeuralMemoryConfig(value_norm="yes")
    with pytest.raises(StateError):  # different pending lengths cannot share a batch
        MemoryState.stack([m(rand_x(1, 4))[1], m(rand_x(1, 5))[1]])


def test_corrupt_truncated_and_foreign_state_files(seed, tmp_path):
    m = make(tiny(), seed)
    _, state = m(rand_x(1, 5))
    path = tmp_path / "s.safetensors"
    state.save(path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="corrupt or truncated") as err:
        MemoryState.load(truncated)
    assert err.value.hint

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(StateError):
        MemoryState.load(garbage)

    with pytest.raises(StateError, match="different configuration"):
        MemoryState.load(path, expect_fingerprint=tiny(depth=3).fingerprint())

    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(StateError, match="not a lifelong memory state"):
        MemoryState.load(foreign)

    with pytest.raises(StateError, match="no memory state file"):
        MemoryState.load(tmp_path / "missing.safetensors")


def test_empty_input_returns_empty_output_and_same_state(seed):
    m = make(tiny(), seed)
    _, state = m(rand_x(1, 4))
    y, after = m(rand_x(1, 0), state)
    assert y.shape == (1, 0, DIM)
    assert_states_equal(after, state)


# --- the default configuration stays finite on long streams ---------------------------


STRESS = {"init_lr_logit": 10.0, "init_forget_logit": -10.0}  # θ at its bound, no forgetting


@pytest.mark.parametrize("overrides", [
    {}, {"gates": "token"}, {"depth": 1}, {"chunk_size": 4}, {"chunk_size": 1, **STRESS}, STRESS,
    {"update": "paper"}, {"update": "paper", "gates": "token"}, {"update": "paper", "chunk_size": 4},
])
def test_default_config_stays_finite_over_a_long_stream(seed, overrides):
    """Untrained memory, the rule's default θ bound (0.5 for "bounded",
    ``stable_max_lr`` for "paper"), 2 × 8192 tokens of input at a large scale (the
    memory RMS-normalizes its input): the weights stay finite and bounded, and the
    output stays finite, the whole way. The bounded rule also with its gates at
    their most aggressive (θ at the bound, no forgetting)."""
    from lifelong.neural.memory import stable_max_lr

    cfg = NeuralMemoryConfig(**overrides)
    if cfg.update == "paper":
        assert cfg.max_lr == stable_max_lr(cfg.chunk_size, cfg.gates) and not cfg.value_norm
    else:
        assert cfg.max_lr == 0.5 and cfg.value_norm
    m = NeuralMemory(cfg, seed=seed)
    state, largest = None, 0.0
    with torch.no_grad():
        for _ in range(8):
            x = torch.randn(2, 1024, cfg.dim) * 10.0
            y, state = m(x, state)
            assert bool(torch.isfinite(y).all())
            largest = max(largest, max(float(w.abs().max()) for w in state.weights))
    # the weights start at O(1) (init std 1/√fan-in); overflow means 1e38
    assert largest < 100.0


@pytest.mark.parametrize("update,momentum_logit", [("paper", 10.0), ("bounded", 2.2)])
def test_overflowing_memory_raises_instead_of_returning_nan(seed, update, momentum_logit):
    # (the bounded rule scales the step by 1 − η: at η ≈ 1 it would write nothing)
    cfg = NeuralMemoryConfig(dim=64, heads=2, head_dim=32, chunk_size=1, max_lr=50.0, update=update,
                             init_lr_logit=10.0, init_momentum_logit=momentum_logit)
    m = NeuralMemory(cfg, seed=seed)
    with torch.no_grad(), pytest.raises(StateError, match="overflowed") as err:
        m(torch.randn(1, 512, 64))
    assert "max_lr" in err.value.hint


# --- the bounded rule: what it guarantees, and what it buys ------------------------------


def test_gram_bound_bounds_the_chunk_curvature(seed):
    from lifelong.neural.memory.ops import gram_bound

    b, d = 8, 16
    keys = F.normalize(torch.randn(20, b, d, dtype=torch.float64), dim=-1)
    bound = gram_bound(keys)
    top = torch.linalg.eigvalsh(keys @ keys.transpose(-1, -2))[:, -1]
    assert bool((top <= bound + 1e-12).all()) and bool((bound <= b + 1e-12).all())
    assert float(gram_bound(torch.eye(d, dtype=torch.float64)[:b])) == 1.0  # orthogonal keys
    same = keys[0, :1].expand(b, d)
    assert abs(float(gram_bound(same)) - b) < 1e-12  # one key repeated: λ_max = b
    assert float(gram_bound(torch.zeros(b, d, dtype=torch.float64))) == 1.0  # the floor


@pytest.mark.parametrize("chunk", [1, 4])
def test_bounded_write_of_orthogonal_keys_is_exact_after_momentum(seed, chunk):
    """A linear memory, orthogonal unit keys, θ = max_lr = 0.5, no forgetting: the
    chunk's Gram bound is 1 and one write moves M(k_i) all the way to v_i once the
    momentum (η = 0.5) has run out; under the paper's rule the same momentum
    applies the step 1/(1 − η) = 2 times and overshoots to the mirror image."""
    d, n = 8, 4
    errors = {}
    for update in UPDATES:
        cfg = NeuralMemoryConfig(dim=d, heads=1, head_dim=d, depth=1, chunk_size=chunk, update=update,
                                 max_lr=0.5, init_momentum_logit=0.0)
        m = NeuralMemory(cfg, seed=seed).double()
        basis = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
        k = basis[:n].reshape(1, 1, n, d)
        v = F.normalize(torch.randn(1, 1, n, d, dtype=torch.float64), dim=-1)
        gates = torch.zeros(1, 1, n, 3, dtype=torch.float64)
        gates[..., 0], gates[..., 1] = 40.0, -40.0  # θ = max_lr, α ≈ 0, η = 0.5
        state = m.write_associations(k, v, gates, m.init_state(1))
        drain = gates[..., :1, :].expand(1, 1, 64 * chunk, 3).clone()
        drain[..., 0] = -40.0  # θ ≈ 0: only the momentum moves M
        zeros = torch.zeros(1, 1, 64 * chunk, d, dtype=torch.float64)
        before = (m.read_associations(k, m.init_state(1)) - v).norm()
        state = m.write_associations(zeros, zeros.clone(), drain, state)
        errors[update] = float((m.read_associations(k, state) - v).norm().detach() / before.detach())
    assert errors["bounded"] < 1e-9
    assert abs(errors["paper"] - 1.0) < 1e-6  # M(k) − v → −(M₀(k) − v)


def test_one_write_stores_half_of_16_pairs_at_depth_2():
    """The capacity goal (``lifelong bench memory --capacity``): one write of 16
    random pairs removes ≥ 50 % of the associative loss at depth 2 with the default
    rule and bound; the paper's rule at its stable bound removes far less."""
    from lifelong.bench.memory import CapacityConfig, write_once_removed

    cfg = CapacityConfig(trials=3, seed=random.randrange(1000))
    for chunk in (16, 64):
        mean, worst = write_once_removed(cfg, "bounded", 2, chunk)
        assert worst > 0.5, (chunk, mean, worst)
        assert write_once_removed(cfg, "paper", 2, chunk)[0] < 0.35


def test_models_keep_the_paper_rule_and_its_caps_unless_asked():
    from lifelong.neural.config import ModelConfig
    from lifelong.neural.layers.titans import MAX_MOMENTUM, memory_config

    paper = memory_config(ModelConfig(kind="mac", memory_chunk=8))
    assert paper.update == "paper" and paper.max_lr == 0.005 and paper.max_momentum == MAX_MOMENTUM
    bounded = memory_config(ModelConfig(kind="mac", memory_chunk=8, memory_options={"update": "bounded"}))
    assert bounded.update == "bounded" and bounded.max_lr == 0.5 and bounded.max_momentum == 1.0
    capped = memory_config(ModelConfig(kind="mac", memory_options={"update": "bounded", "max_lr": 0.2}))
    assert capped.max_lr == 0.2


def test_memories_saved_before_the_update_field_keep_the_papers_rule(seed, tmp_path):
    import json

    # a state's fingerprint under the paper's rule is the one saved before `update` existed
    assert NeuralMemoryConfig(update="paper").fingerprint() == "dd89716075294a98"
    assert NeuralMemoryConfig().fingerprint() != "dd89716075294a98"  # the bounded rule is another memory
    m = NeuralMemory(tiny(update="paper"), seed=seed)
    folder = m.save_pretrained(tmp_path / "memory")
    config = json.loads((folder / "config.json").read_text())
    del config["update"], config["value_norm"]  # as an earlier version wrote it
    (folder / "config.json").write_text(json.dumps(config))
    loaded = NeuralMemory.from_pretrained(folder)
    assert loaded.config.update == "paper" and loaded.config.value_norm is False
    assert loaded.config.fingerprint() == m.config.fingerprint()
