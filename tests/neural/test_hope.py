"""Hope: the Continuum Memory System and self-modifying Titans against their float64
literal references (Nested Learning, arXiv 2512.24695, Eq. 70–72, 88, 90)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lifelong.errors import ConfigError, StateError
from lifelong.neural.config import ModelConfig
from lifelong.neural.layers.cms import CMSConfig, CMSState
from lifelong.neural.layers.cms_naive import naive_in_context
from lifelong.neural.layers.hope import MEMORIES, SelfModConfig, SelfModifyingTitans, SelfModState
from lifelong.neural.layers.hope_naive import naive_selfmod
from lifelong.neural.lm import InContextState, build_model


def small(kind: str = "hope_attention", **over) -> ModelConfig:
    base = dict(kind=kind, vocab_size=16, dim=8, n_layers=2, n_heads=2, mlp_hidden=8,
                cms_chunks=[2, 4], selfmod_chunk=2, selfmod_memory_chunk=2, cms_lr=5e-3)
    base.update(over)
    return ModelConfig(**base)


def grads_of(loss: torch.Tensor, model: torch.nn.Module) -> list[torch.Tensor]:
    params = list(model.parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


# --------------------------------------------------------------------------- self-modifying Titans


@pytest.mark.parametrize("chunks", [(2, 2), (2, 4), (4, 2)])
def test_selfmod_equals_its_literal_recurrence_and_outer_gradients_agree(chunks) -> None:
    torch.manual_seed(0)
    cfg = SelfModConfig(dim=8, heads=2, chunk_memory=chunks[0], chunk_other=chunks[1], max_lr=0.5,
                        init_lr_logit=0.0, init_retention_logit=2.0)
    layer = SelfModifyingTitans(cfg).double()
    x = torch.randn(2, 11, 8, dtype=torch.double)  # 11: the last step is incomplete
    y, state = layer(x)
    y_ref, final = naive_selfmod(layer, x)
    assert torch.allclose(y, y_ref, atol=1e-10)
    for i, m in enumerate(MEMORIES):
        for j, w in enumerate(state.run[i]):
            ref = torch.stack([torch.stack([final[m][b][h][j] for h in range(2)]) for b in range(2)])
            assert torch.allclose(w, ref, atol=1e-10), (m, j)
    probe = torch.randn_like(y)
    for got, want in zip(grads_of((y * probe).sum(), layer), grads_of((y_ref * probe).sum(), layer)):
        assert torch.allclose(got, want, atol=1e-9)


def test_selfmod_split_calls_equal_one_call_and_state_round_trips(tmp_path) -> None:
    torch.manual_seed(1)
    layer = SelfModifyingTitans(SelfModConfig(dim=8, heads=2, chunk_memory=2, chunk_other=4)).double()
    x = torch.randn(2, 13, 8, dtype=torch.double)
    whole, final = layer(x)
    parts, state = [], None
    for a, b in [(0, 3), (3, 4), (4, 9), (9, 13)]:
        y, state = layer(x[:, a:b], state)
        parts.append(y)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-12)
    state.save(tmp_path / "s.safetensors")
    loaded = SelfModState.load(tmp_path / "s.safetensors", expect_fingerprint=layer.config.fingerprint())
    more = torch.randn(2, 3, 8, dtype=torch.double)
    assert torch.equal(layer(more, state)[0], layer(more, loaded)[0])
    # each sequence carries its own memories
    alone, _ = layer(x[1:2])
    assert torch.allclose(alone, whole[1:2], atol=1e-12)


# --------------------------------------------------------------------------- the CMS in a model


@pytest.mark.parametrize("kind,variant,chunks", [
    ("hope_attention", "sequential", [2, 4]),
    ("hope_attention", "headwise", [2, 4]),
    ("hope_attention", "nested", [4, 2]),
    ("hope", "sequential", [2, 4]),
])
def test_in_context_learning_equals_the_token_by_token_loop(kind, variant, chunks) -> None:
    torch.manual_seed(0)
    model = build_model(small(kind, cms_variant=variant, cms_chunks=chunks)).double()
    ids = torch.randint(0, 16, (1, 9), generator=torch.Generator().manual_seed(3))
    logits, state = model(ids)
    ref_logits, ref_weights = naive_in_context(model, ids)
    assert torch.allclose(logits, ref_logits, atol=1e-10)
    for b, block in enumerate(state.blocks):
        cms = block[-1]
        for i in range(len(chunks)):
            for j in range(3):
                assert torch.allclose(cms.weights[i][j][0], ref_weights[b][i][j], atol=1e-10)
    # the outer loss differentiates through every in-context write the same way
    probe = torch.randn_like(logits)
    for got, want in zip(grads_of((logits * probe).sum(), model), grads_of((ref_logits * probe).sum(), model)):
        assert torch.allclose(got, want, atol=1e-8)


def test_outer_gradient_through_in_context_updates_passes_gradcheck() -> None:
    torch.manual_seed(0)
    model = build_model(small("hope_attention", n_layers=1, cms_chunks=[2], vocab_size=8)).double()
    ids = torch.randint(0, 8, (1, 7), generator=torch.Generator().manual_seed(2))
    cms = model.blocks[0].mlp
    names = ["blocks.0.mlp.gate.0", "blocks.0.mlp.lr_logit"]
    base = {n: p for n, p in model.named_parameters()}

    def f(gate, lr_logit):
        out, _ = torch.func.functional_call(model, {**base, names[0]: gate, names[1]: lr_logit}, (ids,))
        return out[:, -3:].sum(-1)

    inputs = (cms.gate[0].detach().clone().requires_grad_(), cms.lr_logit.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("T", [8, 17, 33])
def test_cadence_each_level_writes_floor_of_tokens_over_its_chunk(T: int) -> None:
    model = build_model(small(cms_chunks=[2, 4, 8], vocab_size=16)).eval()
    ids = torch.randint(0, 16, (2, T + 1))  # T tokens whose label (the next one) is known
    with torch.no_grad():
        _, state = model(ids)
    for block in state.blocks:
        assert block[-1].updates.tolist() == [[T // 2, T // 4, T // 8]] * 2


def test_split_passes_equal_one_pass_and_states_save_load_stack_index(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(small("hope", cms_chunks=[2, 4])).double().eval()
    ids = torch.randint(0, 16, (2, 15), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = model(ids)
        parts, state = [], None
        for a, b in [(0, 1), (1, 6), (6, 7), (7, 15)]:
            y, state = model(ids[:, a:b], state)
            parts.append(y)
        assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-12)
        with torch.inference_mode():  # as `lifelong bench run` evaluates
            assert torch.allclose(model(ids)[0], whole, atol=1e-12)
        # each sequence its own state: alone, sequence 1 gives the same logits
        assert torch.allclose(model(ids[1:2])[0], whole[1:2], atol=1e-12)
        state.save(tmp_path / "s.safetensors")
        loaded = InContextState.load(tmp_path / "s.safetensors", expect_fingerprint=model.fingerprint())
        more = torch.randint(0, 16, (2, 5))
        cont, _ = model(more, state)
        assert torch.equal(cont, model(more, loaded)[0])
        swapped = InContextState.stack([loaded.index(1), loaded.index(0)])
        assert torch.equal(model(more[[1, 0]], swapped)[0], cont[[1, 0]])
    (tmp_path / "bad.safetensors").write_bytes(b"not a state")
    with pytest.raises(StateError):
        InContextState.load(tmp_path / "bad.safetensors")
    with pytest.raises(StateError):
        InContextState.load(tmp_path / "s.safetensors", expect_fingerprint="0" * 16)
    with pytest.raises(StateError):
        CMSState.load(tmp_path / "s.safetensors")  # a model state is not a CMS state
    other = build_model(small("hope", cms_chunks=[2])).double()
    with pytest.raises(StateError):
        other(more, loaded)


def test_learning_rate_zero_is_the_static_model_and_learning_changes_it() -> None:
    torch.manual_seed(0)
    frozen = build_model(small(cms_options={"learn_lr": False, "lr": 0.0})).double().eval()
    ids = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        learning, _ = frozen(ids)
        frozen.in_context_updates = False
        static, _ = frozen(ids)
        assert torch.allclose(learning, static, atol=1e-12)
        model = build_model(small()).double().eval()
        learning, _ = model(ids)
        model.in_context_updates = False
        static, _ = model(ids)
    assert torch.allclose(learning[:, :2], static[:, :2], atol=1e-12)  # before the first write
    assert not torch.allclose(learning[:, 4:], static[:, 4:], atol=1e-6)


def test_first_order_option_keeps_outer_gradients_into_initial_weights_and_rates() -> None:
    torch.manual_seed(0)
    model = build_model(small(cms_options={"second_order": False}))
    ids = torch.randint(0, 16, (2, 12))
    logits, _ = model(ids)
    logits.logsumexp(-1).mean().backward()
    cms = model.blocks[0].mlp
    assert cms.lr_logit.grad is not None and cms.lr_logit.grad.abs().sum() > 0
    assert torch.isfinite(cms.gate[0].grad).all()


def test_bad_cms_configs_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="multiples"):
        CMSConfig(chunk_sizes=(4, 6))
    with pytest.raises(ConfigError, match="nested"):
        CMSConfig(chunk_sizes=(4, 16), variant="nested")
    with pytest.raises(ConfigError):
        CMSConfig(variant="parallel")
    with pytest.raises(ConfigError):
        SelfModConfig(dim=8, heads=3)
    assert dataclasses.asdict(CMSConfig(chunk_sizes=(16, 64)))["chunk_sizes"] == (16, 64)


def test_selfmod_agrees_with_the_peer_nested_learning_where_semantics_agree() -> None:
    pytest.importorskip("nested_learning")
    from lifelong.bench.hope import compare_selfmod

    for chunks in [(8, 4), (4, 8)]:
        r = compare_selfmod(dim=16, T=16, chunk_memory=chunks[0], chunk_other=chunks[1])
        assert r["max_abs_diff_output"] < 1e-12 and r["max_abs_diff_memories"] < 1e-12, r


def test_the_cms_sweep_configs_are_the_recipe_with_levels_matched_in_size() -> None:
    import dataclasses
    import importlib.util
    from pathlib import Path

    from lifelong.neural.lm import check_matched, param_counts
    from lifelong.train.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs" / "bench"
    folder = root / "cms_sweep"
    configs = {p.stem: load_config(p) for p in sorted(folder.glob("*.toml"))}
    assert sorted(configs) == sorted(f"L{n}-C{c}" for n in (1, 2, 3, 4) for c in (16, 32))
    # make.py writes exactly these files
    spec = importlib.util.spec_from_file_location("cms_sweep_make", folder / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    base = (root / "recipe" / "hope_attention.toml").read_text()
    hidden = make.widths(base)
    for n in (1, 2, 3, 4):
        for slow in (16, 32):
            assert (folder / f"L{n}-C{slow}.toml").read_text() == make.config_text(base, n, slow, hidden[n])
    # periods halve from the slowest, and every level writes within a training sequence
    # (its first write needs C + 1 tokens)
    recipe = load_config(root / "recipe" / "hope_attention.toml")
    for name, c in configs.items():
        n, slow = int(name[1]), int(name.split("C")[1])
        assert c.model.cms_chunks == [slow // 2 ** (n - 1 - i) for i in range(n)]
        assert max(c.model.cms_chunks) + 1 <= c.train.seq_len
        # the recipe's sizes, data, steps and learning rate; only the levels differ
        assert dataclasses.replace(c.model, cms_chunks=recipe.model.cms_chunks, mlp_hidden=None) == recipe.model
        assert c.task == recipe.task
        assert dataclasses.replace(c.train, out_dir=recipe.train.out_dir) == recipe.train
    # L1-C16 is the recipe's model; the others have about its parameter count
    assert configs["L1-C16"].model.cms_chunks == [16] and configs["L1-C16"].model.mlp_hidden == 168
    check_matched(param_counts({k: c.model for k, c in configs.items()}), tolerance=0.05)
