"""Hope-Attention retrofitted into the embedded Gemma (Nested Learning §7.3): at learning
rate 0 it is Gemma; with a learning rate it learns from what it reads, at each level's
cadence, and its session state continues exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from lifelong.errors import ConfigError, StateError
from lifelong.neural.retrofit import (
    HopeGemma,
    RetrofitConfig,
    RetrofitState,
    model_folder,
    parse_layers,
)

pytestmark = pytest.mark.slow  # loads the real model (and converts the GGUF once per machine)


@pytest.fixture(scope="module")
def gemma():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder("local")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def retrofit(gemma, **cfg) -> HopeGemma:
    model, tok = gemma
    return HopeGemma(model=copy.deepcopy(model), tokenizer=tok, config=RetrofitConfig(**cfg))


TEXT = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is"


def test_with_learning_rates_zero_the_logits_are_gemmas(gemma) -> None:
    model, tok = gemma
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
    hope = retrofit(gemma, layers=(0, 5, 17), chunk_sizes=(4, 8), lr=0.0)
    got = hope.feed(hope.session(), ids, learn=True)  # the in-context loop, writing zeros
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)  # float32, another matmul order
    assert int(got[0, -1].argmax()) == int(want[0, -1].argmax())


def test_it_learns_at_each_levels_cadence_and_split_reads_equal_one_read(gemma, tmp_path) -> None:
    hope = retrofit(gemma, layers=(16, 17), chunk_sizes=(4, 8), lr=1e-5)
    ids = hope.encode(TEXT)
    T = ids.shape[1]
    whole = hope.session()
    logits = hope.feed(whole, ids)
    for s in whole.state.cms:  # tokens whose label was read: T − 1
        assert s.updates.tolist() == [[(T - 1) // 4, (T - 1) // 8]]
    before = hope.ffns[1].cms.gate[0]
    assert not torch.equal(whole.state.cms[1].weights[0][0][0], before)

    static = hope.feed(hope.session(), ids, learn=False)
    assert torch.allclose(logits[:, :4], static[:, :4], atol=1e-4)  # before the first write
    assert not torch.allclose(logits[:, 8:], static[:, 8:], atol=1e-4)

    split = hope.session()
    parts = [hope.feed(split, ids[:, a:b]) for a, b in [(0, 3), (3, 9), (9, T)]]
    torch.testing.assert_close(torch.cat(parts, 1), logits, rtol=1e-4, atol=1e-3)

    whole.state.save(tmp_path / "session.safetensors")
    loaded = RetrofitState.load(tmp_path / "session.safetensors", expect_fingerprint=hope.fingerprint())
    assert torch.equal(loaded.cms[0].weights[1][2], whole.state.cms[0].weights[1][2])
    with pytest.raises(StateError):
        RetrofitState.load(tmp_path / "session.safetensors", expect_fingerprint="other")
    assert whole.nbytes > whole.state.nbytes > 0  # weights and gradient sums, plus the KV cache


def test_answers_leave_the_session_as_it_was_and_bad_specs_are_refused(gemma) -> None:
    hope = retrofit(gemma, layers=(17,), chunk_sizes=(4,), lr=0.0)
    session = hope.session()
    hope.read(session, "The capital of France is Paris.")
    before = (session.seen, session.state.cms[0].updates.clone())
    assert hope.answer(session, " The capital of France is", max_new_tokens=3).strip().startswith("Paris")
    assert (session.seen, session.state.cms[0].updates.tolist()) == (before[0], before[1].tolist())
    hope.read(session, " The capital of France is")
    assert hope.answer(session, "", max_new_tokens=2).strip().startswith("Paris")  # right after the read
    with pytest.raises(ConfigError):
        hope.answer(hope.session(), "", max_new_tokens=2)
    assert parse_layers("14-17") == (14, 15, 16, 17) and parse_layers("all") == ()
    with pytest.raises(ConfigError):
        parse_layers("x")
    from lifelong.cli.common import load_llm

    with pytest.raises(ConfigError):
        load_llm("hf-cms:local?levels=16&colour=blue")


def test_as_a_continual_learner_it_learns_material_and_answers_in_a_fresh_context(gemma) -> None:
    from types import SimpleNamespace

    from lifelong.neural.retrofit import RetrofitLearner

    hope = retrofit(gemma, layers=(17,), chunk_sizes=(4,), lr=1e-6)
    learner = RetrofitLearner(hope)
    learner.learn(SimpleNamespace(material="The capital of France is Paris."))
    assert learner.session.state.cms[0].updates.sum() > 0
    assert learner.material_tokens > 0
    cost = learner.memory()  # the harness's MemoryCost fields
    assert cost.tokens == 0 and cost.bytes == learner.session.nbytes > 0
    from lifelong.continual.learners import Learner

    assert isinstance(learner, Learner) and learner.name == "hope-gemma"
    out = learner.answer(SimpleNamespace(prompt="The capital of France is", max_tokens=3))
    assert isinstance(out.text, str) and out.context_tokens > 0
    assert len(hope.tokenizer.encode(out.text, add_special_tokens=False)) <= 3
