"""Consolidation: smaller or nothing, and the previous set stays recoverable."""

from __future__ import annotations

import pytest

from lifelong.context.consolidate import (
    apply,
    consolidate,
    consolidation_hook,
    duplicates_plan,
    parse_plan,
    propose,
)
from lifelong.context.notes import Notes
from lifelong.errors import StoreError, ValidationError

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
    plan = (f"[{b}] The office is in Munich (since May).\nDROP [{a}]\n[{c},{d}] Weekly reports: Friday noon.\n"
            f"DOC reports.md: Reports go to the team lead as report-WEEK.pdf.\nEND")
    llm = ScriptedLLM([plan])
    r = consolidate(llm, notes, docs)
    assert r.applied and r.tokens_after < before == r.tokens_before and r.plan.refused == []
    assert [n.text for n in notes.list()] == ["The office is in Munich (since May).",
                                              "Weekly reports: Friday noon."]
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
    llm = ScriptedLLM([f"[{a.id},{b.id}] Office: Munich since May, not Berlin.\nEND"])
    notes.on_over_budget = consolidation_hook(llm)
    notes.add("Reports are due on Friday at noon, every week, to the team lead.")
    assert [n.text for n in notes.list()] == ["Office: Munich since May, not Berlin.",
                                               "Reports are due on Friday at noon, every week, to the team lead."]
    assert notes.tokens() <= 30


def test_a_plan_never_loses_the_right_fact_to_a_copy_of_another_note(memory):
    """The README tour's failure: a junk note beside the right one, and a plan that
    replaces the right note by a copy of the junk. Nothing of it is applied."""
    notes, docs = memory
    right = notes.add("The Blue team's code word is MARIGOLD.").note
    junk = notes.add("The new member joins port 9443.").note
    before = notes.render()
    for reply in (f"[{right.id}] The new member joins port 9443.\nEND",  # loses the fact, makes a twin
                  f"DROP [{right.id}]\nEND",  # retires a fact nothing newer replaces
                  f"[{right.id},{junk.id}] The new member joins port 9443.\nEND"):
        r = consolidate(ScriptedLLM([reply]), notes, docs)
        assert not r.applied and notes.render() == before, reply
        assert r.plan.refused and "nothing changed" in r.reason
    r = consolidate(ScriptedLLM([f"[{right.id}] The new member joins port 9443.\nEND"]), notes, docs,
                    dry_run=True)
    assert [why for _, why in r.plan.refused] == [f"would lose blue, marigold of note {right.id}"]
    r = consolidate(ScriptedLLM([f"DROP [{right.id}]\nEND"]), notes, docs)
    assert "no newer note replaces it" in r.plan.refused[0][1]
    # The store refuses a twin too, whoever asks (a person, an MCP client).
    with pytest.raises(ValidationError, match=f"note {junk.id} already says this"):
        notes.supersede(right.id, "the new member joins port 9443")
    assert [n.id for n in notes.list()] == [right.id, junk.id]


def test_a_merge_that_would_duplicate_a_note_that_stays_is_refused(memory):
    notes, docs = memory
    a = notes.add("Reports are due every Friday.").note
    b = notes.add("Reports go to Anna in the finance team.").note
    c = notes.add("Tickets use the prefix OPS-.").note
    reply = f"[{a.id},{c.id}] Tickets use the prefix OPS- and reports are due Friday.\n" \
            f"[{b.id}] Tickets use the prefix OPS- and reports are due Friday.\nEND"
    r = consolidate(ScriptedLLM([reply]), notes, docs, dry_run=True)
    assert [line for line, _ in r.plan.refused] == [f"[{b.id}] Tickets use the prefix OPS- and reports are "
                                                    "due Friday."]
    assert "would duplicate" in r.plan.refused[0][1] or "would lose" in r.plan.refused[0][1]


def test_a_plan_that_copies_the_prompts_example_is_refused(memory):
    notes, docs = memory
    a = notes.add("Reports are due Friday.").note
    b = notes.add("Reports go to Anna.").note
    reply = f"[{a.id},{b.id}] Weekly reports are due Friday at noon, sent to Anna.\n" \
            f"DOC reports.md: Weekly reports go to the team lead as a PDF named report-WEEK.pdf.\nEND"
    r = consolidate(ScriptedLLM([reply]), notes, docs)
    assert not r.applied and [n.id for n in notes.list()] == [a.id, b.id]
    reasons = dict(r.plan.refused)
    assert "repeats the prompt's example (noon, sent, weekly)" in reasons[
        f"[{a.id},{b.id}] Weekly reports are due Friday at noon, sent to Anna."]
    assert not docs.exists("reports.md")


def test_dry_run_shows_a_diff_and_apply_carries_out_exactly_that_plan(memory):
    notes, docs = memory
    a, b, c, d = _seed(notes)
    reply = (f"[{b}] The office is in Munich (since May).\nDROP [{a}]\n"
             f"DOC reports.md: Reports go to the team lead as a PDF named report-WEEK.pdf.\nEND")
    before = notes.render()
    r = propose(ScriptedLLM([reply]), notes)
    assert not r.applied and notes.render() == before and r.plan.destructive
    new_id = d + 1
    assert r.diff() == [
        f"- [{a}] The office is in Berlin.",
        f"- [{b}] The office moved to Munich in May.",
        f"  [{c}] Reports are due Friday.",
        f"  [{d}] Weekly reports are due on Friday at noon, sent to the team lead as a PDF named "
        "report-WEEK.pdf.",
        f"+ [{new_id}] The office is in Munich (since May).",
        "+ docs/reports.md: Reports go to the team lead as a PDF named report-WEEK.pdf.",
    ]
    apply(r, notes, docs)
    assert notes.render() == r.block_after
    # a plan made for other notes is not applied
    stale = propose(ScriptedLLM([f"DROP [{c}]\n[{new_id}] Office: Munich since May.\nEND"]), notes)
    notes.add("Tickets use the prefix OPS-.")
    with pytest.raises(StoreError, match="changed since this plan was made"):
        apply(stale, notes, docs)
