"""Notes on both backends: dedup, edits, supersede, soft delete, purge,
history, rendering, the token budget and usage statistics."""

from __future__ import annotations

import pytest

from lifelong.context import Notes, OverBudget, default_budget, render_notes, word_count
from lifelong.context.notes import is_near_duplicate, normalize
from lifelong.errors import BudgetExceededError, ConfigError, NotFoundError, ValidationError


def snapshot(notes: Notes) -> tuple:
    """Everything stored for a namespace, to prove a refused write changed nothing."""
    return (
        [(n.id, n.text, n.status, n.tags, n.tokens, n.superseded_by) for n in notes.list(None)],
        [(e.note_id, e.kind, e.old_text, e.new_text) for e in notes.history()],
    )


def test_add_records_every_field(notes):
    r = notes.add("Deploys use make release, not scripts/deploy.sh.", tags=["deploy"],
                  session="s1", task="t1")
    assert r.created and r.duplicate is None
    n = notes.get(r.note.id)
    assert n.text == "Deploys use make release, not scripts/deploy.sh."
    assert (n.namespace, n.status, n.model, n.session, n.task) == ("alice", "active", "test-model", "s1", "t1")
    assert n.tags == ["deploy"] and n.tokens == 6 and n.created == n.updated > 0
    [e] = notes.history(n.id)
    assert (e.kind, e.new_text, e.session, e.task, e.model) == ("add", n.text, "s1", "t1", "test-model")
    assert e.block_tokens == word_count(notes.render())


def test_exact_and_near_duplicates_are_not_stored_twice(notes):
    first = notes.add("The staging database is read-only on Fridays.").note
    exact = notes.add("  the STAGING database   is read-only on fridays ")
    assert not exact.created and exact.duplicate == "exact" and exact.note.id == first.id
    near = notes.add("The staging database is read-only on Fridays, always.")
    assert not near.created and near.duplicate == "near" and near.note.id == first.id
    assert near.similarity >= 0.8
    # Same words but opposite meaning: a negation is never a near duplicate.
    opposite = notes.add("The staging database is not read-only on Fridays.")
    assert opposite.created
    different = notes.add("Use the staging database for load tests.")
    assert different.created
    assert [n.text for n in notes.list()] == [
        "The staging database is read-only on Fridays.",
        "The staging database is not read-only on Fridays.",
        "Use the staging database for load tests.",
    ]
    kinds = [e.kind for e in notes.history(first.id)]
    assert kinds == ["add", "duplicate", "duplicate"]  # the attempts are remembered


def test_near_duplicate_definition():
    assert normalize("  Hello   World. ") == "hello world"
    near, sim = is_near_duplicate("a b c d e f g h i j", "a b c d e f g h i k", 0.85)
    assert not near and sim == pytest.approx(9 / 11)
    near, sim = is_near_duplicate("a b c d e f g h i j", "a b c d e f g h i j k", 0.85)
    assert near and sim == pytest.approx(10 / 11)
    assert not is_near_duplicate("always run the tests first", "never run the tests first", 0.5)[0]


def test_edit_replaces_text_that_occurs_exactly_once(notes):
    n = notes.add("Port 8080 serves the API; port 8081 serves metrics.").note
    with pytest.raises(ValidationError, match="occurs 2 times"):
        notes.edit(n.id, "serves", "hosts")
    with pytest.raises(ValidationError, match="occurs 0 times"):
        notes.edit(n.id, "9090", "9091")
    with pytest.raises(ValidationError, match="empty"):
        notes.edit(n.id, "", "x")
    edited = notes.edit(n.id, "8081 serves", "9100 serves", session="s2")
    assert edited.text == "Port 8080 serves the API; port 9100 serves metrics."
    assert notes.get(n.id).text == edited.text and notes.get(n.id).updated >= n.updated
    e = notes.history(n.id)[-1]
    assert (e.kind, e.old_text, e.new_text, e.session) == ("edit", n.text, edited.text, "s2")
    with pytest.raises(NotFoundError):
        notes.edit(9999, "a", "b")


def test_supersede_links_old_notes_to_the_new_one(notes):
    a = notes.add("Tests need Postgres 15.", tags=["db"]).note
    b = notes.add("Run make test before pushing.", tags=["ci"]).note
    c = notes.add("Coffee machine is on floor 2.").note
    new = notes.supersede([a.id, b.id], "Run make test (installs Postgres) before pushing.", session="s3")
    assert new.tags == ["db", "ci"]  # merged, unless given
    assert [n.id for n in notes.list()] == [c.id, new.id]
    for old in (a, b):
        got = notes.get(old.id)
        assert got.status == "superseded" and got.superseded_by == new.id and got.text == old.text
        assert notes.history(old.id)[-1].kind == "superseded"
        assert notes.history(old.id)[-1].related_id == new.id
    with pytest.raises(ValidationError, match="superseded by note"):
        notes.edit(a.id, "Tests", "Specs")
    with pytest.raises(ValidationError):
        notes.supersede([], "x")
    assert notes.history(new.id)[0].kind == "supersede"


def test_delete_is_soft_restore_brings_back_purge_is_real(notes):
    a = notes.add("Old build server is build-01.").note
    b = notes.add("Build server is build-02.").note
    notes.delete(a.id, reason="decommissioned")
    assert [n.id for n in notes.list()] == [b.id]
    assert notes.get(a.id).status == "deleted"
    assert [n.id for n in notes.list("deleted")] == [a.id]
    assert notes.history(a.id)[-1].new_text == "decommissioned"
    with pytest.raises(ValidationError, match="deleted"):
        notes.delete(a.id)
    notes.restore(a.id)
    assert [n.id for n in notes.list()] == [a.id, b.id]  # back in its original place
    with pytest.raises(ValidationError, match="is active"):
        notes.purge(a.id)
    notes.delete(a.id)
    notes.purge(a.id)
    with pytest.raises(NotFoundError):
        notes.get(a.id)
    with pytest.raises(NotFoundError):
        notes.history(a.id)
    assert {e.note_id for e in notes.history()} == {b.id}


def test_render_is_compact_and_deterministic(notes, store):
    assert notes.render() == ""
    notes.add("First line\nsecond line")
    notes.add("Another note")
    ids = [n.id for n in notes.list()]
    expected = f"## Notes\n- [{ids[0]}] First line\n  second line\n- [{ids[1]}] Another note\n"
    assert notes.render() == expected
    again = Notes(store, "alice", 200, word_count)  # a fresh instance renders the same block
    assert again.render() == expected == render_notes(again.list())
    assert notes.tokens() == word_count(expected)


def test_write_over_budget_is_refused_and_changes_nothing(store):
    small = Notes(store, "tight", 20, word_count, create=True)
    small.add("one two three four five six")  # block: header 2 + "- [1]" 2 + 6 = 10 words
    before = snapshot(small)
    with pytest.raises(BudgetExceededError, match="over its budget of 20") as err:
        small.add("alpha beta gamma delta epsilon zeta eta theta iota")
    assert "consolidate" in err.value.hint
    with pytest.raises(BudgetExceededError):
        small.edit(small.list()[0].id, "six", "six 7 8 9 10 11 12 13 14 15 16 17")
    assert snapshot(small) == before
    assert small.tokens() <= 20
    # Writes that shrink a block are allowed even after the budget was lowered.
    tighter = Notes(store, "tight", 5, word_count)
    tighter.edit(small.list()[0].id, "four five six", "four")
    assert small.list()[0].text == "one two three four"


def test_over_budget_hook_makes_room_then_write_retries(store):
    calls: list[OverBudget] = []

    def make_room(notes: Notes, info: OverBudget) -> None:
        calls.append(info)
        oldest = notes.list()[0]
        notes.supersede(oldest.id, "short")

    n = Notes(store, "hooked", 14, word_count, on_over_budget=make_room, create=True)
    n.add("a b c d e f g h")  # 2 + 2 + 8 = 12
    r = n.add("x y z")
    assert r.created and [x.text for x in n.list()] == ["short", "x y z"]
    [info] = calls
    assert (info.operation, info.budget_tokens, info.tokens_before, info.tokens_after) == ("add", 14, 12, 17)
    assert info.excess == 3
    # A hook that frees nothing: the retry is refused, loudly.
    stubborn = Notes(store, "hooked", 14, word_count, on_over_budget=lambda notes, info: None)
    with pytest.raises(BudgetExceededError, match="even after on_over_budget"):
        stubborn.add("one two three four five six seven eight nine")


def test_malformed_notes_are_refused_and_change_nothing(notes):
    notes.add("keep me")
    before = snapshot(notes)
    for bad in ("", "   \n ", None):
        with pytest.raises(ValidationError, match="empty"):
            notes.add(bad)
    with pytest.raises(ValidationError, match="characters"):
        notes.add("x" * 9000)
    with pytest.raises(ValidationError, match="tokens; the limit is 512"):
        notes.add("word " * 600)
    with pytest.raises(ValidationError, match="invalid tags"):
        notes.add("tagged", tags=["has space"])
    with pytest.raises(ValidationError, match="unknown status"):
        notes.list("archived")
    assert snapshot(notes) == before


def test_unknown_and_invalid_namespaces(store):
    with pytest.raises(NotFoundError, match="unknown namespace 'ghost'"):
        Notes(store, "ghost", 100, word_count)
    with pytest.raises(ValidationError, match="invalid namespace"):
        Notes(store, "../etc", 100, word_count, create=True)
    assert "ghost" not in store.namespaces()


def test_stats_from_recorded_history(notes):
    assert notes.stats().growth_per_day == 0 and notes.stats().days_left is None
    notes.add("one two three")
    notes.add("four five six seven")
    events = notes.history()
    used = word_count(notes.render())
    assert events[-1].block_tokens == used
    t0 = events[0].at
    # Two days after the first write: growth is the whole block over two days.
    s = notes.stats(now=t0 + 2 * 86400)
    assert (s.active_notes, s.tokens_used, s.budget_tokens, s.free_tokens) == (2, used, 200, 200 - used)
    assert s.window_days == pytest.approx(2.0)
    assert s.growth_per_day == pytest.approx(used / 2.0)
    assert s.days_left == pytest.approx((200 - used) / (used / 2.0))
    # Sixty days later with a 30-day window: nothing was written in the window.
    late = notes.stats(now=t0 + 60 * 86400, window_days=30)
    assert late.growth_per_day == 0 and late.days_left is None
    # Less than a day of history counts as one day, and days left are not extrapolated from it.
    fresh = notes.stats(now=t0 + 120)
    assert fresh.growth_per_day == pytest.approx(used / 1.0) and fresh.days_left is None
    assert fresh.history_days == pytest.approx(120 / 86400)


def test_export_agents_md(notes, tmp_path):
    notes.add("Deploy with make release.")
    out = notes.export_agents_md(tmp_path / "AGENTS.md")
    text = out.read_text()
    assert text.startswith("# AGENTS.md\n") and notes.render() in text


def test_default_budget_follows_the_seed():
    assert default_budget(1_000_000) == 500_000  # 1M window − 500k task buffer
    assert default_budget(32_768, task_reserve=8_192) == 24_576
    with pytest.raises(ConfigError):
        default_budget(1000, task_reserve=1000)


def test_a_block_over_a_lowered_budget_renders_whole_and_says_so(notes):
    import warnings

    from lifelong.errors import BudgetWarning

    notes.add("The staging database is read-only on Fridays.")
    notes.add("Deploys use make release.")
    block = notes.render()
    tight = Notes(notes.store, notes.namespace, word_count(block) - 1, word_count)
    with pytest.warns(BudgetWarning, match=rf"is {word_count(block)} tokens, over its budget of "
                      rf"{word_count(block) - 1}"):
        assert tight.render() == block  # never cut
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at the budget: no warning
        Notes(notes.store, notes.namespace, word_count(block), word_count).render()
        # read-only notes render without a tokenizer, and refuse writes
        read_only = Notes(notes.store, notes.namespace, 1, None)
        assert read_only.render() == block
    with pytest.raises(ConfigError, match="read-only"):
        read_only.add("Another note.")
    assert notes.render() == block
