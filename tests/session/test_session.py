"""Sessions: prompt assembly, the tool loop, attempts with feedback, compaction, reflection."""

from __future__ import annotations

import json

import pytest

from lifelong.context.session import TEXT_PROTOCOL, Session, SessionConfig
from lifelong.errors import ValidationError
from lifelong.task import Task

from .conftest import ScriptedLLM, tool_call


def ops_task(**kw) -> Task:
    return Task(prompt="Open a ticket for the operations team. What is the ticket id?",
                check=lambda a: 1.0 if a.strip().startswith("OPS-") else 0.0,
                family="acme", id="t1", **kw)


def test_prompt_has_notes_index_and_task_last(memory):
    notes, docs = memory
    notes.add("Tickets of the operations team start with OPS-.")
    docs.write("conventions.md", "Ticket prefixes: operations OPS-, billing BIL-.", description="Ticket rules")
    llm = ScriptedLLM(["OPS-1"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False, prefetch_docs=0)).run(ops_task())
    prompt = llm.prompts[0]
    assert "- conventions.md: Ticket rules" in prompt
    assert "[1] Tickets of the operations team start with OPS-." in prompt
    assert TEXT_PROTOCOL in prompt
    # notes come after the index and instructions, the task comes last with its cue
    assert prompt.index("## Documentation") < prompt.index("## Notes") < prompt.index("## Task")
    assert prompt.endswith("What is the ticket id?\nAnswer:")
    assert out.answer == "OPS-1" and out.score == 1.0 and out.attempts == 1
    assert out.prompt_tokens == llm.count_tokens(prompt) and out.context_tokens == out.prompt_tokens


def test_no_memory_means_a_bare_prompt():
    llm = ScriptedLLM(["\n\n  42  \nmore text"])
    out = Session(llm, None, None).run("What is six times seven?")
    assert llm.prompts[0] == "## Task\nWhat is six times seven?\nAnswer:"
    assert out.answer == "42"  # the first non-empty line
    assert out.score is None and not out.notes_written


def test_read_and_search_commands_put_results_in_the_context(memory):
    notes, docs = memory
    docs.write("conventions.md", "Operations tickets use the prefix OPS-.")
    llm = ScriptedLLM(["SEARCH ticket prefix", "READ conventions.md", "OPS-7"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False, prefetch_docs=0)).run(ops_task())
    assert "> SEARCH ticket prefix\n- conventions.md" in llm.prompts[1]
    after_read = llm.prompts[2].split("> READ conventions.md\n", 1)[1]
    assert after_read.index("Operations tickets use the prefix OPS-.") < after_read.index("## Task")
    assert out.tool_calls == 2 and out.score == 1.0
    assert [m["role"] for m in out.transcript] == ["assistant", "tool", "assistant", "tool", "assistant"]


def test_task_files_are_readable_and_errors_are_shown_not_raised(memory):
    notes, docs = memory
    task = ops_task(environment={"handbook.txt": "line one\nOperations use OPS-.\n"})
    llm = ScriptedLLM(["READ ../../etc/passwd", "READ handbook.txt", "OPS-2"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False)).run(task)
    assert "## Task files\n- handbook.txt" in llm.prompts[0]
    assert "(error:" in llm.prompts[1]  # a path outside the workspace is refused, as text
    assert "Operations use OPS-." in llm.prompts[2]
    assert out.score == 1.0


def test_steps_are_bounded(memory):
    notes, docs = memory
    llm = ScriptedLLM(["SEARCH a", "SEARCH b", "READ x.md"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False, max_steps=2, prefetch_docs=0)).run(ops_task())
    # after max_steps the tool instructions are gone and the reply is the answer
    assert TEXT_PROTOCOL not in llm.prompts[2]
    assert out.answer == "READ x.md" and out.tool_calls == 2


def test_feedback_after_a_wrong_attempt_and_a_second_try(memory):
    notes, docs = memory
    fb = "Wrong: operations tickets start with OPS-."
    task = ops_task(feedback=lambda a, s: fb, max_attempts=2)
    llm = ScriptedLLM(["TCK-1", "OPS-1"])
    out = Session(llm, notes, docs, SessionConfig(reflect=False)).run(task)
    assert out.attempts == 2 and out.score == 1.0 and out.feedback == [fb]
    assert f"Your answer: TCK-1\nFeedback: {fb}" in llm.prompts[1]


def test_a_checker_that_raises_fails_the_session_only(memory):
    notes, docs = memory
    task = Task(prompt="Say something.", check=lambda a: 1 / 0, id="bad-task")
    out = Session(ScriptedLLM(["hello"]), notes, docs, SessionConfig(reflect=False)).run(task)
    assert out.score is None and "bad-task" in out.error and "ZeroDivisionError" in out.error


def test_reflection_writes_a_note_and_a_doc_on_failure_too(memory, tmp_path):
    notes, docs = memory
    task = ops_task(feedback=lambda a, s: "Wrong: operations tickets start with OPS-.")
    llm = ScriptedLLM(["TCK-1", " Operations tickets start with OPS-.",
                       "The task asked for a ticket id. TCK was wrong. TCK was wrong. OPS- is right."])
    out = Session(llm, notes, docs, SessionConfig(transcript_dir=tmp_path / "tr")).run(task)
    assert out.score == 0.0
    assert [n.text for n in notes.list()] == ["Operations tickets start with OPS-."]
    assert out.notes_written == [notes.list()[0].id]
    note = notes.get(out.notes_written[0])
    assert list(note.tags) == ["acme"]
    reflection = llm.prompts[1]
    assert "Answer given: TCK-1" in reflection and "Feedback: Wrong: operations" in reflection
    assert reflection.endswith("Note:")
    assert out.docs_written == ["acme.md"]
    page = docs.read("acme.md").text
    assert "TCK was wrong. OPS- is right." in page and page.count("TCK was wrong.") == 1
    assert "- tried: TCK-1" in page
    stored = json.loads((tmp_path / "tr" / "acme" / f"{out.session_id}.json").read_text())
    assert stored["outcome"]["answer"] == "TCK-1" and stored["task"]["id"] == "t1"

    # a second session appends to the same topic file
    llm2 = ScriptedLLM(["OPS-3", "NONE", "Second entry."])
    Session(llm2, notes, docs, SessionConfig(prefetch_docs=0)).run(ops_task())
    assert docs.read("acme.md", max_tokens=10_000).text.count("## Session") == 2
    assert len(notes.list()) == 1  # NONE writes no note


def test_reflection_can_edit_and_delete_unless_add_only(memory):
    notes, docs = memory
    first = notes.add("Operations tickets start with TCK-.").note
    other = notes.add("The office is in Berlin.").note
    cfg = SessionConfig(use_docs=False)
    Session(ScriptedLLM(["OPS-1", f"EDIT {first.id}: Operations tickets start with OPS-."]), notes, None,
            cfg).run(ops_task())
    texts = [n.text for n in notes.list()]
    assert "Operations tickets start with OPS-." in texts and "Operations tickets start with TCK-." not in texts
    assert notes.get(first.id).status == "superseded"

    add_only = SessionConfig(use_docs=False, note_ops=frozenset({"add"}))
    Session(ScriptedLLM(["OPS-1", f"DELETE {other.id}"]), notes, None, add_only).run(ops_task())
    assert notes.get(other.id).status == "active"  # add-only reflection cannot delete
    Session(ScriptedLLM(["OPS-1", f"DELETE [{other.id}]"]), notes, None, cfg).run(ops_task())
    assert notes.get(other.id).status == "deleted"


def test_a_note_over_budget_is_refused_not_truncated(tmp_path):
    from lifelong.context import Notes, open_store, word_count

    store = open_store(f"sqlite:///{tmp_path}/m.db")
    notes = Notes(store, "tiny", 12, word_count, create=True)
    notes.add("one two three four five")
    long_note = "a b c d e f g h i j k l m n"
    out = Session(ScriptedLLM(["x", long_note]), notes, None, SessionConfig(use_docs=False)).run("Task?")
    assert out.notes_written == [] and any("refused" in w for w in out.warnings)
    assert [n.text for n in notes.list()] == ["one two three four five"]


def test_compaction_summarises_older_steps_and_goes_on(memory):
    notes, docs = memory
    docs.write("big.md", "\n".join(f"fact {i}: " + "word " * 20 for i in range(40)))
    llm = ScriptedLLM(["READ big.md", "READ big.md 200", "READ big.md 400",
                       "Facts 0 to 9 were read; the answer is still open.", "OPS-9"],
                      context_window=260)
    cfg = SessionConfig(reflect=False, prefetch_docs=0, page_tokens=60, max_tokens=10, compact_at=0.9)
    out = Session(llm, notes, docs, cfg).run(ops_task())
    assert out.compactions >= 1
    summary_prompt = next(p for p in llm.prompts if p.startswith("Summarize these working steps"))
    assert "> READ big.md" in summary_prompt
    last = llm.prompts[-1]
    assert "Summary of earlier steps: Facts 0 to 9 were read" in last
    assert llm.count_tokens(last) <= 260
    assert out.answer == "OPS-9"


def test_native_tool_calls_protocol(memory):
    notes, docs = memory
    docs.write("conventions.md", "Operations tickets use OPS-.")
    llm = ScriptedLLM([tool_call("search", query="ticket prefix"), tool_call("read", path="conventions.md"),
                       "OPS-5"])
    out = Session(llm, notes, docs, SessionConfig(protocol="tools", reflect=False, prefetch_docs=0)).run(ops_task())
    assert out.answer == "OPS-5" and out.tool_calls == 2
    assert {t["function"]["name"] for t in llm.kwargs[0]["tools"]} == {"read", "search"}
    tool_msgs = [m for m in llm.prompts[2] if m["role"] == "tool"]
    assert tool_msgs[0]["content"] == "- conventions.md"
    assert "Operations tickets use OPS-." in tool_msgs[1]["content"]


def test_bad_config_and_empty_task():
    with pytest.raises(ValidationError):
        SessionConfig(protocol="smoke-signals")
    with pytest.raises(ValidationError):
        SessionConfig(note_ops=frozenset({"add", "rewrite"}))
    with pytest.raises(ValidationError):
        Session(ScriptedLLM([]), None, None).run("   ")


def blue_task(**kw) -> Task:
    return Task(prompt="A new member joins the Blue team. Which code word must they use?",
                check=lambda a: 1.0 if "MARIGOLD" in a else 0.0, family="acme", id="blue-2", **kw)


@pytest.mark.parametrize("parrot", [
    "The staging server listens on port 9443.",  # the example, word for word
    "The new member joins port 9443.",  # the README tour's note: the task's words, the example's fact
    "EDIT 1: The Blue team listens on port 9443.",  # an edit is checked the same way
])
def test_reflection_never_stores_the_prompts_example(memory, parrot):
    notes, docs = memory
    notes.add("The Blue team's code word is MARIGOLD.")
    before = notes.render()
    steps = []
    llm = ScriptedLLM(["MARIGOLD", parrot, "The member used MARIGOLD."])
    out = Session(llm, notes, docs, SessionConfig(prefetch_docs=0), on_step=steps.append).run(blue_task())
    assert out.score == 1.0 and out.notes_written == []
    assert notes.render() == before
    assert any("repeats the prompt's example" in w and "9443" in w for w in out.warnings), out.warnings
    assert steps == ["attempt 1 of 1", "reflecting: a note", "reflecting: documentation"]
    # The examples stand before the notes and the task, marked as examples.
    reflection = llm.prompts[1]
    assert reflection.index("only to show the format") < reflection.index("port 9443") \
        < reflection.index("Your task.") < reflection.index("## Notes") < reflection.index("Task: A new member")


def test_reflection_refuses_made_up_specifics_and_restatements(memory):
    notes, docs = memory
    first = notes.add("The Blue team's code word is MARIGOLD.").note
    cfg = SessionConfig(use_docs=False)
    # a code word the session never showed
    out = Session(ScriptedLLM(["MARIGOLD", "The Red team's code word is TULIP."]), notes, None, cfg).run(blue_task())
    assert out.notes_written == [] and "red, tulip appear(s) nowhere in the session" in out.warnings[0]
    # the same fact in other words: the existing note is enough
    out = Session(ScriptedLLM(["MARIGOLD", "The blue team uses the code word MARIGOLD."]), notes, None,
                  cfg).run(blue_task())
    assert out.notes_written == [] and out.warnings == [f"note not written: note {first.id} already says this"]
    # grounded news is written; with ground_notes=False a specific the model knows is allowed
    feedback = Task(prompt="Which channel does the Blue team use?", check=lambda a: float("#blue-ops" in a),
                    feedback=lambda a, s: "Wrong: the Blue team talks in #blue-ops.", family="acme")
    out = Session(ScriptedLLM(["#general", "The Blue team talks in #blue-ops."]), notes, None, cfg).run(feedback)
    assert len(out.notes_written) == 1
    loose = SessionConfig(use_docs=False, ground_notes=False)
    out = Session(ScriptedLLM(["MARIGOLD", "New members get a badge from Tom."]), notes, None,
                  loose).run(blue_task())
    assert len(out.notes_written) == 1


def test_the_documentation_entry_drops_what_it_copies_from_its_prompt(memory):
    notes, docs = memory
    copied = ("Task: A new member joins the Blue team. Which code word must they use? Answer given: "
              "MARIGOLD Result: correct. Task: A new member joins the Blue team")
    Session(ScriptedLLM(["MARIGOLD", "NONE", copied]), notes, docs, SessionConfig(prefetch_docs=0)).run(blue_task())
    page = docs.read("acme.md").text
    assert "Answer given" not in page and "- tried: MARIGOLD" in page
