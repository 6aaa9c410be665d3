"""Consolidation into weights: context distillation of a namespace's notes into a LoRA adapter.

The learning tests use the tiny reader of ``tiny_reader.py``: it knows a code
only when the note that states it is in its context, so answering without the
note is something only the adapter can have taught it.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lifelong.context import Notes, open_store
from lifelong.errors import ConfigError, ModelError, NotFoundError, ValidationError
from lifelong.llm import load_llm
from lifelong.llm.adapters import AdapterStore
from lifelong.train.distill import (
    DistillConfig,
    Example,
    TrainingInterrupted,
    batch_loss,
    consolidate_into_weights,
    kl_naive,
    schedule,
    teacher_examples,
    topk_kl,
    use_version,
)
from tests.train.tiny_reader import note, question, reader_prompt

# Small and quick: the tiny model's own questions are junk the filter drops, so
# its inputs are the recorded task and the cloze prompt.
FAST = dict(questions_per_note=1, general_prompts=1, teacher_notes="active", epochs=10, batch_size=2,
            lr=5e-3, checkpoint_every=2)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models lose most of their time to thread hand-offs on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def llm(tiny_dir):
    m = load_llm(f"hf:{tiny_dir}")
    yield m
    m.close()


@pytest.fixture
def notes(home, llm):
    store = open_store(f"sqlite:///{home}/memory.db")
    yield Notes(store, "acme", 200, llm.count_tokens, create=True)
    store.close()


def answer(llm, color: str, notes_rows=None) -> str:
    return llm.complete(reader_prompt(question(color), notes_rows), max_tokens=3).text.strip()


def adapter_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


# -- the loss ----------------------------------------------------------------------------------


def test_topk_kl_is_the_float64_reference():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    student = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    t_logp = torch.log_softmax(teacher, -1)
    full = topk_kl(student, torch.arange(40).expand(6, 40), t_logp)
    assert torch.allclose(full, kl_naive(teacher, student), atol=1e-12, rtol=0)
    top = torch.topk(t_logp, 5, dim=-1)
    coarse = topk_kl(student, top.indices, top.values)
    assert torch.allclose(coarse, kl_naive(teacher, student, k=5), atol=1e-12, rtol=0)
    assert (coarse <= full + 1e-12).all() and (coarse > 0).all()  # a lower bound, not zero
    # a one-hot teacher (the raw-text baseline) makes it the cross-entropy
    one_hot = topk_kl(student, torch.tensor([[3]] * 6), torch.zeros(6, 1, dtype=torch.float64))
    assert torch.allclose(one_hot, -torch.log_softmax(student, -1)[:, 3], atol=1e-12)


def test_padded_batch_computes_what_each_example_alone_does(llm):
    model = llm.model.double()
    try:
        g = torch.Generator().manual_seed(1)
        examples = []
        for n_prompt, n_answer in ((5, 3), (9, 1), (7, 4)):
            logp = torch.log_softmax(torch.randn(n_answer, model.config.vocab_size, generator=g,
                                                 dtype=torch.float64), -1)
            top = torch.topk(logp, 6, dim=-1)
            examples.append(Example("task", "", torch.randint(4, 30, (n_prompt,), generator=g).tolist(),
                                    torch.randint(4, 30, (n_answer,), generator=g).tolist(), top.indices,
                                    top.values))
        batched = batch_loss(model, examples, 0, "cpu")
        alone = [batch_loss(model, [e], 0, "cpu") * len(e.answer_ids) for e in examples]
        expected = sum(alone) / sum(len(e.answer_ids) for e in examples)
        assert abs(float(batched.detach()) - float(expected.detach())) < 1e-10
    finally:
        llm.model.float()


def test_teacher_targets_are_the_teacher_distribution_on_its_own_answer(llm):
    block = "## Notes\n- [1] The code of blue is tulip.\n"
    [ex] = teacher_examples(llm, [("task", question("blue"), "")], block, DistillConfig(top_k=5))
    assert ex.answer == "tulip" and ex.answer_ids[-1] == llm.tokenizer.eos_token_id  # it learns to stop
    assert ex.student_ids == llm.encode(reader_prompt(question("blue")))[0].tolist()  # no notes
    teacher = llm.encode(reader_prompt(question("blue"), [(1, note("blue", "tulip"))]))[0].tolist()
    with torch.no_grad():
        logits = llm.model(input_ids=torch.tensor([teacher + ex.answer_ids])).logits[0].double()
    want = torch.log_softmax(logits[len(teacher) - 1:-1], -1)  # every position of the answer
    top = torch.topk(want, 5, dim=-1)
    assert torch.equal(ex.topk_ids, top.indices)
    assert torch.allclose(ex.topk_logp.double(), top.values, atol=1e-5)


def test_schedule_replays_earlier_rounds_and_is_fixed_by_the_seed():
    cfg = DistillConfig(epochs=2, batch_size=3, replay=0.5)
    steps = schedule(4, 10, cfg)
    assert steps == schedule(4, 10, cfg)
    for epoch in (steps[:2], steps[2:]):  # 4 new + 2 replayed per epoch, in batches of 3
        items = [x for b in epoch for x in b]
        assert sorted(i for w, i in items if w == "new") == [0, 1, 2, 3]
        assert len([i for w, i in items if w == "old"]) == 2
    assert schedule(4, 0, cfg) == [b for b in schedule(4, 0, cfg)]
    assert len(schedule(4, 10, DistillConfig(epochs=2, batch_size=3, max_steps=3, replay=0.5))) == 3


# -- learning --------------------------------------------------------------------------------


def test_tiny_model_learns_a_fact_from_its_notes_and_keeps_it_after_a_second_round(home, llm, notes, tiny_dir):
    assert answer(llm, "blue") == "blue"  # not in the weights: it repeats the colour
    assert answer(llm, "blue", [(1, note("blue", "tulip"))]) == "tulip"  # only in the notes

    first = notes.add(note("blue", "tulip")).note
    r1 = consolidate_into_weights(llm, notes, config=DistillConfig(**FAST), recorded=[question("blue")],
                                  retire=True)
    assert (r1.version, r1.notes, r1.retired) == (1, [first.id], [first.id])
    assert r1.sources["task"] == 1 and r1.loss_last < r1.loss_first
    # retired: out of the block, kept in history with the version that holds it
    assert notes.render() == "" and notes.get(first.id).status == "deleted"
    assert notes.history(first.id)[-1].new_text == "consolidated into weights: adapter v1"
    assert answer(llm, "blue") == "blue"  # training left the base model as it was

    v1 = load_llm(f"hf:{tiny_dir}?adapter=acme")
    assert answer(v1, "blue") == "tulip"  # no notes in context, the adapter knows
    v1.close()

    second = notes.add(note("red", "maple")).note
    r2 = consolidate_into_weights(llm, notes, config=DistillConfig(**FAST), recorded=[question("red")],
                                  retire=True)
    assert (r2.version, r2.notes, r2.replayed) == (2, [second.id], r1.examples)
    v2 = load_llm(f"hf:{tiny_dir}?adapter=acme")
    assert (answer(v2, "red"), answer(v2, "blue")) == ("maple", "tulip")  # new fact, and the earlier one kept
    v2.close()
    old = load_llm(f"hf:{tiny_dir}?adapter=acme@1")  # every version stays loadable
    assert answer(old, "red") != "maple" and answer(old, "blue") == "tulip"
    old.close()

    store = AdapterStore("acme")
    meta = store.current().meta
    assert meta["parent"] == 1 and meta["notes"] == [{"id": second.id, "text": note("red", "maple")}]

    # nothing new: nothing trained, nothing changed
    again = consolidate_into_weights(llm, notes, config=DistillConfig(**FAST))
    assert again.version == 2 and again.steps == 0 and "nothing new" in again.message

    # back to v1: the current pointer moves and the note v2 retired comes back
    assert use_version(notes, store, 1) == [second.id]
    assert store.current().version == 1 and notes.get(second.id).status == "active"
    assert notes.get(first.id).status == "deleted"


def test_raw_text_baseline_trains_the_same_adapter_format(home, llm, notes, tiny_dir):
    notes.add(note("green", "cedar"))
    r = consolidate_into_weights(llm, notes, config=DistillConfig(objective="raw", epochs=4, batch_size=1,
                                                                  lr=5e-3))
    assert r.version == 1 and r.sources == {"raw": 1} and r.loss_last < r.loss_first
    assert AdapterStore("acme").current().meta["objective"] == "raw"


# -- interruption: resume and roll back -------------------------------------------------------


class Stop(Exception):
    pass


def stop_at(step: int):
    def progress(stage, done, total):
        if stage == "train" and done == step:
            raise Stop

    return progress


def test_an_interrupted_round_resumes_to_the_same_adapter(home, llm, notes, tiny_dir, tmp_path):
    notes.add(note("blue", "tulip"))
    cfg = DistillConfig(**{**FAST, "epochs": 4})
    reference = consolidate_into_weights(llm, notes, config=cfg, recorded=[question("blue")],
                                         store=AdapterStore("acme", tmp_path / "reference"))

    store = AdapterStore("acme")
    with pytest.raises(Stop):
        consolidate_into_weights(llm, notes, config=cfg, recorded=[question("blue")], progress=stop_at(3))
    assert store.current() is None and (store.work_dir / "checkpoint").is_dir()
    assert json.loads((store.work_dir / "checkpoint" / "state.json").read_text()) == {"step": 2}
    with pytest.raises(NotFoundError):  # nothing half-made is ever served
        load_llm(f"hf:{tiny_dir}?adapter=acme")

    resumed = consolidate_into_weights(llm, notes, config=cfg, recorded=[question("blue")])
    assert resumed.resumed_from == 2 and resumed.version == 1 and not store.work_dir.exists()
    want, got = adapter_weights(reference.path), adapter_weights(resumed.path)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6, rtol=0), name


def test_roll_back_an_interrupted_round_and_keep_the_previous_adapter(home, llm, notes, tiny_dir):
    notes.add(note("blue", "tulip"))
    cfg = DistillConfig(**FAST)
    consolidate_into_weights(llm, notes, config=cfg, recorded=[question("blue")])
    v1 = adapter_weights(AdapterStore("acme").current().path)

    notes.add(note("red", "maple"))
    with pytest.raises(Stop):
        consolidate_into_weights(llm, notes, config=cfg, recorded=[question("red")], progress=stop_at(5))
    store = AdapterStore("acme")
    assert store.current().version == 1  # the previous adapter still serves
    served = load_llm(f"hf:{tiny_dir}?adapter=acme")
    assert answer(served, "blue") == "tulip"
    served.close()

    # the notes changed since: resuming that round would train something else
    notes.add(note("black", "lotus"))
    with pytest.raises(ConfigError, match="rollback"):
        consolidate_into_weights(llm, notes, config=cfg, recorded=[question("red")])
    assert store.work_dir.is_dir() and adapter_weights(store.current().path).keys() == v1.keys()

    r = consolidate_into_weights(llm, notes, config=cfg, recorded=[question("red")], rollback=True)
    assert r.resumed_from == 0 and r.version == 2 and len(r.notes) == 2


def test_a_time_budget_that_runs_out_checkpoints_and_stops(home, llm, notes):
    notes.add(note("blue", "tulip"))
    cfg = DistillConfig(**{**FAST, "max_seconds": 1e-9})
    with pytest.raises(TrainingInterrupted, match="resume"):
        consolidate_into_weights(llm, notes, config=cfg, recorded=[question("blue")])
    store = AdapterStore("acme")
    assert store.current() is None
    assert json.loads((store.work_dir / "checkpoint" / "state.json").read_text()) == {"step": 1}
    r = consolidate_into_weights(llm, notes, config=DistillConfig(**FAST), recorded=[question("blue")])
    assert r.resumed_from == 1 and r.version == 1


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused_before_anything_changes(home, llm, notes, tiny_dir):
    with pytest.raises(ValidationError, match="no notes"):
        consolidate_into_weights(llm, notes, config=DistillConfig(**FAST))

    notes.add(note("blue", "tulip"))
    notes.add(note("red", "maple"))
    with pytest.raises(ConfigError, match="cannot cover"):  # a step budget that cannot be met
        consolidate_into_weights(llm, notes, config=DistillConfig(**{**FAST, "max_steps": 1}),
                                 recorded=[question("blue"), question("red")])
    store = AdapterStore("acme")
    assert store.current() is None and [n.status for n in notes.list(None)] == ["active", "active"]

    long = " ".join(["The code of blue is tulip ."] * 40)  # notes the teacher's window cannot hold
    many = Notes(notes.store, "long", 10_000, llm.count_tokens, create=True, max_note_tokens=1000)
    many.add(long)
    with pytest.raises(ConfigError, match="window"):
        consolidate_into_weights(llm, many, config=DistillConfig(**FAST))
    assert not AdapterStore("long").work_dir.exists()

    with pytest.raises(ConfigError):
        DistillConfig(objective="sft")
    with pytest.raises(NotFoundError, match="has no adapter"):
        load_llm(f"hf:{tiny_dir}?adapter=nobody")
    with pytest.raises(NotFoundError, match="no adapter at"):
        load_llm(f"hf:{tiny_dir}?adapter=./not-a-folder")
    # the same round with a budget that fits: the examples already made are reused
    r = consolidate_into_weights(llm, notes, config=DistillConfig(**FAST),
                                 recorded=[question("blue"), question("red")])
    assert r.version == 1 and r.data_seconds < 1.0
    with pytest.raises(NotFoundError, match="version 7"):
        load_llm(f"hf:{tiny_dir}?adapter=acme@7")
    with_adapter = load_llm(f"hf:{tiny_dir}?adapter=acme")
    with pytest.raises(ConfigError, match="base model"):  # train on the base, not on a merged adapter
        consolidate_into_weights(with_adapter, notes, config=DistillConfig(**FAST))
    with_adapter.close()
    meta = json.loads((r.path / "lifelong.json").read_text())
    meta["base"]["fingerprint"] = "0" * 16
    (r.path / "lifelong.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="trained on"):
        load_llm(f"hf:{tiny_dir}?adapter=acme")


def test_export_is_a_plain_peft_folder_that_loads_as_a_spec(home, llm, notes, tiny_dir, tmp_path):
    notes.add(note("blue", "tulip"))
    consolidate_into_weights(llm, notes, config=DistillConfig(**FAST), recorded=[question("blue")])
    out = AdapterStore("acme").export(tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "lifelong.json"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_dir) and config["r"] == 16
    exported = load_llm(f"hf:{tiny_dir}?adapter={out}")
    assert answer(exported, "blue") == "tulip"
    exported.close()
    with pytest.raises(ConfigError, match="not empty"):
        AdapterStore("acme").export(out)
