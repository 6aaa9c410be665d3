"""The model zoo in the shared LM shell: exact streaming, generation, bounded state,
attention against a dense reference, size matching, and learning on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lifelong.neural.attention import Attention, rope
from lifelong.neural.config import MODEL_KINDS, ModelConfig
from lifelong.neural.lm import build_model, check_matched, param_counts, state_nbytes
from lifelong.train.config import RunConfig, TaskConfig, TrainConfig, load_config
from lifelong.train.lm import train

REPO = Path(__file__).resolve().parents[2]


def tiny(kind: str, **over) -> ModelConfig:
    base = dict(
        kind=kind, vocab_size=40, dim=32, n_layers=2, n_heads=4, window=8, segment_len=8,
        memory_chunk=4, n_persistent=2, deltanet_chunk=8, cms_chunks=[4, 8], selfmod_chunk=4,
        selfmod_memory_chunk=4,
    )
    base.update(over)
    return ModelConfig(**base)


class Progression:
    """x_{t+1} = x_t + d (mod V) with a random start and step d: learnable from two tokens."""

    vocab_size = 32
    tokenizer = None

    def sample_batch(self, batch_size: int, seq_len: int, generator: torch.Generator):
        start = torch.randint(0, self.vocab_size, (batch_size, 1), generator=generator)
        step = torch.randint(1, 6, (batch_size, 1), generator=generator)
        seq = (start + step * torch.arange(seq_len + 1)) % self.vocab_size
        labels = seq[:, 1:].clone()
        labels[:, 0] = -100  # the step is unknowable from one token
        return seq[:, :-1], labels


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_streaming_in_chunks_equals_one_pass(kind: str) -> None:
    torch.manual_seed(1)
    model = build_model(tiny(kind)).double().eval()
    ids = torch.randint(0, 40, (2, 41), generator=torch.Generator().manual_seed(2))
    full, _ = model(ids)
    # Splits that cut segments, windows, memory chunks and DeltaNet chunks anywhere,
    # including single tokens as in generation.
    cuts = [0, 3, 4, 5, 13, 16, 17, 30, 41]
    chunks = [ids[:, a:b] for a, b in zip(cuts, cuts[1:])]
    streamed = torch.cat([logits for logits, _ in model.stream(chunks)], dim=1)
    torch.testing.assert_close(streamed, full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_greedy_generate_equals_argmax_of_full_forward(kind: str) -> None:
    torch.manual_seed(3)
    model = build_model(tiny(kind)).double().eval()
    prompt = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(4))
    out = model.generate(prompt, max_new_tokens=6, prefill_chunk=3)
    assert out.shape == (2, 13)
    assert torch.equal(out[:, :7], prompt)
    with torch.no_grad():
        logits, _ = model(out[:, :-1])
    # Each generated token is the argmax after its prefix, re-read from scratch.
    assert torch.equal(out[:, 7:], logits[:, 6:].argmax(-1))


def test_sampling_is_reproducible_from_a_generator() -> None:
    model = build_model(tiny("swa")).eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    a = model.generate(prompt, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(9))
    b = model.generate(prompt, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", [k for k in MODEL_KINDS if k not in ("transformer", "hope_attention")])
def test_carried_state_stops_growing_beyond_the_window(kind: str) -> None:
    model = build_model(tiny(kind)).eval()
    ids = torch.randint(0, 40, (1, 64), generator=torch.Generator().manual_seed(5))
    sizes = []
    state = None
    for logits, state in model.stream(ids.split(8, dim=1)):
        sizes.append(state_nbytes(state))
    # After the window (8) is full the state has a fixed size.
    assert len(set(sizes[2:])) == 1, sizes


def test_full_attention_cache_grows_with_the_sequence() -> None:
    model = build_model(tiny("transformer")).eval()
    ids = torch.randint(0, 40, (1, 32), generator=torch.Generator().manual_seed(5))
    sizes = [state_nbytes(s) for _, s in model.stream(ids.split(8, dim=1))]
    assert sizes == sorted(sizes) and sizes[-1] == 4 * sizes[0]


def _reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out query by query: keys j <= i within the window, plus persistent."""
    b, t, d = x.shape
    h, hd = attn.n_heads, attn.head_dim
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    pos = torch.arange(t)
    split = lambda z: z.view(b, t, h, hd).transpose(1, 2)  # noqa: E731
    q, k, v = rope(split(q), pos, attn.rope_base), rope(split(k), pos, attn.rope_base), split(v)
    pk = pv = None
    if attn.persistent is not None:
        _, pk, pv = attn.qkv(attn.persistent).chunk(3, dim=-1)
        pk, pv = pk.view(-1, h, hd).transpose(0, 1), pv.view(-1, h, hd).transpose(0, 1)
    out = torch.zeros_like(q)
    for i in range(t):
        lo = 0 if attn.window is None else max(0, i - attn.window + 1)
        keys, vals = k[:, :, lo : i + 1], v[:, :, lo : i + 1]
        if pk is not None:
            keys = torch.cat([pk.expand(b, -1, -1, -1), keys], dim=2)
            vals = torch.cat([pv.expand(b, -1, -1, -1), vals], dim=2)
        scores = (q[:, :, i : i + 1] @ keys.transpose(-1, -2)) / math.sqrt(hd)
        out[:, :, i] = (scores.softmax(-1) @ vals)[:, :, 0]
    return attn.proj(out.transpose(1, 2).reshape(b, t, d))


@pytest.mark.parametrize("window,n_persistent", [(None, 0), (5, 0), (5, 3), (64, 0)])
def test_attention_matches_dense_reference(window, n_persistent) -> None:
    torch.manual_seed(6)
    attn = Attention(24, 3, window=window, n_persistent=n_persistent).double()
    x = torch.randn(2, 37, 24, dtype=torch.float64)
    y, _ = attn(x)
    torch.testing.assert_close(y, _reference_attention(attn, x), rtol=1e-10, atol=1e-10)


def test_param_budget_matches_every_kind_within_ten_percent() -> None:
    configs = {k: tiny(k, param_budget=60_000) for k in MODEL_KINDS}
    counts = param_counts(configs)
    check_matched(counts, tolerance=0.10)
    assert all(abs(c - 60_000) <= 6_000 for c in counts.values()), counts


@pytest.mark.parametrize("suite", ["bench/mqar", "bench/niah", "tiny"])
def test_shipped_configs_cover_every_model_matched_within_ten_percent(suite: str) -> None:
    configs = {p.stem: load_config(p) for p in sorted((REPO / "configs" / suite).glob("*.toml"))}
    assert {c.model.kind for c in configs.values()} == set(MODEL_KINDS)
    # Same data, steps and seed for every model of a comparison; only the model differs.
    assert len({(repr(c.task), c.train.steps, c.train.batch_size, c.train.seq_len, c.train.seed)
                for c in configs.values()}) == 1
    counts = param_counts({name: c.model for name, c in configs.items()})
    check_matched(counts, tolerance=0.10)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_model_learns_a_learnable_task_on_cpu(kind: str, tmp_path: Path) -> None:
    cfg = RunConfig(
        name=kind,
        model=tiny(kind, memory_chunk=8),
        task=TaskConfig(name="progression"),
        train=TrainConfig(
            steps=30, batch_size=8, seq_len=24, lr=1e-2, warmup_steps=3, out_dir=str(tmp_path), log_every=10
        ),
    )
    result = train(cfg, task=Progression())
    first, last = result.losses[0], sum(result.losses[-5:]) / 5
    assert first == pytest.approx(math.log(32), abs=0.3)  # untrained: about uniform
    assert last < 0.7 * first, result.losses
    prompt = torch.tensor([[3, 6, 9]])
    out = result.model.eval().generate(prompt, max_new_tokens=4)
    assert out.shape == (1, 7)


@pytest.mark.parametrize("kind", ["lmm", "mac"])
def test_memory_models_stay_finite_over_a_long_stream(kind: str) -> None:
    # The memory learns at test time; its inner learning rate must keep it stable far
    # beyond the training length, where nothing in training constrained it.
    model = build_model(tiny(kind)).eval()
    ids = torch.randint(0, 40, (2, 2048), generator=torch.Generator().manual_seed(8))
    for logits, _ in model.stream(ids.split(256, dim=1)):
        assert torch.isfinite(logits).all()


def test_every_model_runs_forward_and_backward_under_bf16_autocast() -> None:
    # The GPU path trains under bf16 autocast; CPU autocast exercises the same dtypes.
    for kind in MODEL_KINDS:
        model = build_model(tiny(kind))
        ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _ = model(ids)
        assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all(), kind
        logits.float().logsumexp(-1).mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), kind


def test_measure_model_reports_sizes_and_state_by_length() -> None:
    from lifelong.bench.models import measure_model

    rows = {}
    for kind in ("transformer", "mag"):
        cfg = RunConfig(name=kind, model=tiny(kind))
        rows[kind] = measure_model(cfg, lengths=[32, 64], chunk=16, train_steps=1, batch_size=2, seq_len=16)
    for kind, row in rows.items():
        assert row["params"] == build_model(tiny(kind)).num_params()
        assert [x["length"] for x in row["inference"]] == [32, 64]
        assert row["train_tokens_per_s"] > 0 and all(x["tokens_per_s"] > 0 for x in row["inference"])
    full = [x["state_mb"] for x in rows["transformer"]["inference"]]
    assert full[1] == pytest.approx(2 * full[0])  # the KV cache doubles with the length
    mag = [x["state_mb"] for x in rows["mag"]["inference"]]
    assert mag[0] == mag[1]
