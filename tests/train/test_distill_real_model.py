"""The embedded model (hf:local, Gemma 3 270M) through the whole round, once: the
tiny reader is a Llama, so this is where Gemma's modules, tokenizer and
generation meet the recipe. A smoke test: one note, one step."""

from __future__ import annotations

import pytest

from lifelong.context import Notes, open_store
from lifelong.llm import load_llm
from lifelong.llm.adapters import AdapterStore
from lifelong.train.distill import DistillConfig, consolidate_into_weights


@pytest.mark.slow
def test_one_round_on_the_embedded_model(home):
    hf = load_llm("hf:local")
    store = open_store(f"sqlite:///{home}/memory.db")
    notes = Notes(store, "acme", 4000, hf.count_tokens, create=True)
    notes.add("At Velo, tickets for the payments team use the prefix QXT.")
    task = "You work at Velo. Case 1234: A refund has not arrived.\nQuestion: Which ticket prefix do you use?\nAnswer:"
    cfg = DistillConfig(questions_per_note=1, general_prompts=0, epochs=1, batch_size=4, top_k=8)
    r = consolidate_into_weights(hf, notes, config=cfg, recorded=[task], retire=True)
    assert r.version == 1 and r.steps == 1 and r.sources.get("task") == 1 and r.loss_first > 0
    # the teacher read the note: its answer to the recorded task is the prefix
    data = (AdapterStore("acme").current().path / "data" / "examples.json").read_text()
    assert "QXT" in data
    reader = load_llm("hf:local?adapter=acme")
    assert reader.complete(task, max_tokens=4).completion_tokens > 0
    reader.close()
    hf.close()
    store.close()
