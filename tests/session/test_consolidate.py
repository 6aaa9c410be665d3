"""Consolidation: smaller or nothing, and the previous set stays recoverable."""

from __future__ import annotations

from lifelong.context.consolidate import (
    consolidate,
    consolidation_hook,
    duplicates_plan,
    parse_plan,
)
from lifelong.context.notes import Notes

from .conftest import ScriptedLLM


def _seed(notes):
    ids = [notes.add(t).note.id for t in [
        "The office is in Berlin.",
        "The office moved to Munich in May.",
        "Reports are due Friday.",
        "Weekly reports are due on Friday at noon, sent to the team lead as a PDF named report-WEEK.pdf.",
    ]]
    return ids


def test_a_model_plan_merges_drops_and_moves_detail_to_docs(memory):
    notes, docs = memory
    a, b, c, d = _seed(notes)
    before = notes.tokens()
    plan = (f"[{b}] The office is in Munich.\nDROP [{a}]\n[{c},{d}] Weekly reports: Friday noon.\n"
            f"DOC reports.md: Reports go to the team lead as report-WEEK.pdf.\nEND")
    llm = ScriptedLLM([plan])
    r = consolidate(llm, notes, docs)
    assert r.applied and r.tokens_after < before == r.tokens_before
    assert [n.text for n in notes.list()] == ["The office is in Munich.", "Weekly reports: Friday noon."]
    assert notes.get(a).status == "deleted"
    assert {notes.get(i).status for i in (b, c, d)} == {"superseded"}
    assert "report-WEEK.pdf" in docs.read("reports.md").text and r.docs_written == ["reports.md"]
    # the prompt lists the notes by id after the worked example
    assert f"- [{d}] Weekly reports are due on Friday at noon" in llm.prompts[0]
    # the old set is recoverable: every old note is still there with its history
    assert {n.id for n in notes.list(status=None)} >= {a, b, c, d}
    assert any(e.kind == "superseded" and e.session == "consolidation" for e in notes.history(c))


def test_a_plan_that_does_not_shrink_changes_nothing(memory):
    notes, docs = memory
    ids = _seed(notes)
    before = notes.render()
    echo = "\n".join(f"[{n.id}] {n.text} Also remember this always." for n in notes.list())
    r = consolidate(ScriptedLLM([echo]), notes, docs)
    assert not r.applied and "nothing changed" in r.reason
    assert notes.render() == before
    assert all(notes.get(i).status == "active" for i in ids)


def test_lines_naming_unknown_or_inactive_notes_are_ignored(memory):
    notes, _ = memory
    ids = _seed(notes)
    notes.delete(ids[0])
    active = {n.id: n for n in notes.list()}
    plan = parse_plan(f"[999] invented\nDROP [{ids[0]}]\n[{ids[1]}]   \nrandom chatter\n[{ids[2]}] Reports: Friday.",
                      active)
    assert plan.merges == [([ids[2]], "Reports: Friday.")] and plan.drops == []


def test_without_a_model_near_duplicates_are_merged(memory):
    notes, docs = memory
    notes.add("Reports are due every Friday.")
    # stored before duplicate detection could see them (e.g. imported): force them in
    kept = notes.add("Use the VPN when working from home.").note
    extra = notes.store  # same namespace, a near duplicate written by another writer
    near = Notes(extra, notes.namespace, notes.budget_tokens, notes.count_tokens, near_duplicate_threshold=1.01)
    near.add("Reports are due every single Friday.")
    near.add("reports are due on every Friday.")
    plan = duplicates_plan(notes.list())
    assert len(plan.merges) == 1 and len(plan.merges[0][0]) == 3
    r = consolidate(None, notes, docs)
    assert r.applied and len(notes.list()) == 2
    assert notes.get(kept.id).status == "active"


def test_over_budget_hook_consolidates_then_the_write_fits(tmp_path):
    from lifelong.context import open_store, word_count

    store = open_store(f"sqlite:///{tmp_path}/m.db")
    notes = Notes(store, "ns", 30, word_count, create=True)
    a = notes.add("The office is in Berlin near the main station.").note
    b = notes.add("The office moved to Munich in May this year.").note
    llm = ScriptedLLM([f"[{b.id}] Office: Munich.\nDROP [{a.id}]\nEND"])
    notes.on_over_budget = consolidation_hook(llm)
    notes.add("Reports are due on Friday at noon, every week, to the team lead.")
    assert [n.text for n in notes.list()] == ["Office: Munich.",
                                               "Reports are due on Friday at noon, every week, to the team lead."]
    assert notes.tokens() <= 30
