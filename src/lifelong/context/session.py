"""One task with a model: assemble the prompt, work with tools, reflect at the end.

The seed *Prosaic continual learning*: a model does a task with its notes in
context and its documentation on disk; when it finishes — on success and
failure alike — it writes short notes that every future instance will see and
verbose documentation that future instances read on demand.

A session runs in four steps:

1. **Prompt**: the notes block, an index of the documentation (and of the
   task's own files), optionally the best-matching documentation page, then
   the task.
2. **Work**: a tool loop. Chat models use native tool calls (``protocol =
   "tools"``). Any model, small base models included, can use the text
   protocol (``protocol = "text"``), documented in ``TEXT_PROTOCOL``: the
   model answers, or writes one command line (``READ path``, ``SEARCH words``)
   whose result is put in the context before it is asked again.
3. **Attempts**: a task with a checker is scored; a wrong attempt with
   feedback from the world is shown the feedback and tried again, up to the
   task's ``max_attempts``.
4. **Reflection**: the model writes a note (``Note: …``, or ``EDIT id: …`` /
   ``DELETE id``) and a documentation entry, which is appended to the topic's
   Markdown file with the session's record. The transcript is stored.

When the prompt nears the context window, older working steps are
**compacted**: the model summarises them (decisions and open items kept) and
the summary replaces them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_text
from lifelong.context.docs import page_end
from lifelong.context.grounding import content_words, key_terms, leaked, ungrounded
from lifelong.context.notes import ALL_NOTE_OPS
from lifelong.context.store.base import MAX_ID as MAX_NOTE_ID
from lifelong.context.tags import is_tag
from lifelong.errors import (
    BudgetExceededError,
    ContextOverflowError,
    LifelongError,
    ValidationError,
)
from lifelong.llm.base import LLM, Completion, Message
from lifelong.task import Task

TEXT_PROTOCOL = """\
You can look things up before answering. To read a file, reply with one line: READ <path>
To search the documentation, reply with one line: SEARCH <words>
Otherwise reply with the answer only."""

REFLECTION_INSTRUCTIONS = """\
You have finished a task. Write one short note for a fresh instance that will do similar tasks: \
a fact or rule it would not know, in one line. To correct an existing note write \
"EDIT <id>: <new text>"; to remove a wrong one write "DELETE <id>". Write NONE if nothing is new."""

# Worked examples in other domains, shown before the notes and the task and
# marked as examples: a small base model learns the format from them. Each is
# about something no task of a user is about, so that a note repeating one is
# recognised as a copy (``grounding.leaked``) and never stored. The second
# teaches NONE after a correct answer that taught nothing new.
REFLECTION_EXAMPLES = (
    """\
Task: Which port does the staging server listen on?
Answer given: 8080
Result: wrong. Feedback: staging listens on port 9443, not 8080.
Note: The staging server listens on port 9443.""",
    """\
Task: Who approves holiday requests?
Answer given: the team lead
Result: correct.
Note: NONE""",
)
REFLECTION_EXAMPLE = REFLECTION_EXAMPLES[0]  # the name earlier releases exported

@dataclass
class SessionConfig:
    """How a session works. The defaults suit the embedded 270M base model."""

    protocol: str = "text"  # "text" (any model) | "tools" (native tool calls, chat models)
    max_steps: int = 4  # tool steps per attempt before an answer is required
    max_tokens: int = 48  # per model turn while working
    # Stop strings of a working turn. None stops the text protocol at a blank
    # line; its answer (or command) is the first non-empty line of the reply,
    # since small base models often open with a newline.
    stop: tuple[str, ...] | None = None
    temperature: float = 0.0
    seed: int = 0
    reflect: bool = True
    note_ops: frozenset[str] = ALL_NOTE_OPS  # what reflection may do to notes
    use_docs: bool = True
    prefetch_docs: int = 0  # best-matching doc pages put in the prompt up front (RAG-style)
    page_tokens: int = 256  # size of one READ page
    preamble: str | None = None  # extra context, e.g. a previous transcript
    compact_at: float = 0.8  # compact when the prompt passes this share of the window
    reflection_max_tokens: int = 48
    doc_max_tokens: int = 160
    # Refuse a reflected note whose specifics (numbers, names, identifiers) appear
    # nowhere in what the session saw: a small model otherwise invents them.
    ground_notes: bool = True
    transcript_dir: Path | None = None  # where transcripts are stored (None: not stored)

    def __post_init__(self) -> None:
        if self.protocol not in ("text", "tools"):
            raise ValidationError(f"unknown protocol {self.protocol!r}", hint="use 'text' or 'tools'")
        unknown = set(self.note_ops) - ALL_NOTE_OPS
        if unknown:
            raise ValidationError(f"unknown note operations {sorted(unknown)}",
                                  hint=f"choose from {sorted(ALL_NOTE_OPS)}")
        if not 0.1 <= self.compact_at <= 1.0:
            raise ValidationError(f"compact_at must be in [0.1, 1], got {self.compact_at}")
        self.note_ops = frozenset(self.note_ops)


@dataclass
class Outcome:
    """What one session did and what it cost."""

    session_id: str
    task_id: str
    answer: str
    score: float | None  # None: no checker, or the checker raised (see ``error``)
    attempts: int
    transcript: list[Message]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_tokens: int = 0  # the largest prompt sent
    latency_s: float = 0.0
    notes_written: list[int] = field(default_factory=list)
    docs_written: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    tool_calls: int = 0
    compactions: int = 0
    warnings: list[str] = field(default_factory=list)  # e.g. a note refused by the budget
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Budget:
    """Token and time accounting across the model calls of one session."""

    def __init__(self) -> None:
        self.prompt = self.completion = self.context = 0

    def add(self, c: Completion) -> Completion:
        self.prompt += c.prompt_tokens
        self.completion += c.completion_tokens
        self.context = max(self.context, c.prompt_tokens)
        return c


class Session:
    """Run tasks with a model, its notes and its documentation."""

    def __init__(self, llm: LLM, notes: Any | None = None, docs: Any | None = None,
                 config: SessionConfig | None = None, *,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.llm = llm
        self.notes = notes
        self.config = config or SessionConfig()
        self.docs = docs if self.config.use_docs else None
        self._bugs: list[str] = []  # unexpected errors met on the way (run() starts afresh)
        # Told what the session is doing ("attempt 1", "READ x.md", "reflecting: note"): a
        # command line shows it beside a spinner; the library itself prints nothing.
        self.on_step = on_step

    def _step(self, what: str) -> None:
        if self.on_step is not None:
            self.on_step(what)

    # -- public ----------------------------------------------------------------
    def run(self, task: Task | str) -> Outcome:
        if isinstance(task, str):
            task = Task(prompt=task)
        if not task.prompt.strip():
            raise ValidationError("the task prompt is empty", hint="give the task's text")
        sid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        self._budget = _Budget()
        self._tool_calls = 0
        self._compactions = 0
        self._bugs = []  # reported as warnings at the end
        transcript: list[Message] = []
        outcome = Outcome(session_id=sid, task_id=task.id or sid, answer="", score=None, attempts=0,
                          transcript=transcript)
        try:
            self._work(task, outcome)
            if self.config.reflect and (self.notes is not None or self.docs is not None):
                self._reflect(task, outcome)
        except ContextOverflowError as exc:
            outcome.error = f"context overflow: {exc.message}"
        outcome.warnings += [f"bug: {b}" for b in self._bugs]
        outcome.prompt_tokens = self._budget.prompt
        outcome.completion_tokens = self._budget.completion
        outcome.context_tokens = self._budget.context
        outcome.tool_calls = self._tool_calls
        outcome.compactions = self._compactions
        outcome.latency_s = time.perf_counter() - t0
        self._store_transcript(task, outcome)
        return outcome

    def reflect_on(self, messages: Sequence[Message], *, task_id: str = "conversation",
                   family: str | None = None) -> Outcome:
        """Reflect on a conversation held elsewhere (a chat through the memory proxy,
        messages given to ``Memory.add``): the user's turns are the task, the last
        assistant turn the answer; nothing is scored. Writes what :meth:`run`'s
        reflection writes (a note, a documentation entry), with the same checks:
        a note must come from the conversation, not from the prompt's example."""
        turns = [{"role": m.get("role"), "content": _text_of(m.get("content"))} for m in messages
                 if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
        turns = [t for t in turns if t["content"].strip()]
        users = [t["content"] for t in turns if t["role"] == "user"]
        if not users:
            raise ValidationError("a conversation to reflect on needs at least one user turn")
        answer = next((t["content"] for t in reversed(turns) if t["role"] == "assistant"), "")
        ns = getattr(self.notes, "namespace", None) or getattr(self.docs, "namespace", None)
        task = Task(prompt=" / ".join(" ".join(u.split()) for u in users), family=family or ns, id=task_id)
        sid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        self._budget = _Budget()
        self._tool_calls = self._compactions = 0
        self._bugs = []
        outcome = Outcome(session_id=sid, task_id=task_id, answer=answer, score=None, attempts=0,
                          transcript=turns)
        try:
            self._reflect(task, outcome)
        except ContextOverflowError as exc:
            outcome.error = f"context overflow: {exc.message}"
        outcome.warnings += [f"bug: {b}" for b in self._bugs]
        outcome.prompt_tokens, outcome.completion_tokens = self._budget.prompt, self._budget.completion
        outcome.context_tokens = self._budget.context
        outcome.latency_s = time.perf_counter() - t0
        self._store_transcript(task, outcome)
        return outcome

    # -- 1. the prompt ------------------------------------------------------------
    def _context_block(self, task: Task, *, tools: bool = False) -> str:
        """Everything before the working steps. Order matters for small models:
        indexes and instructions first, pages next, and the notes last, nearest
        the task, so they are what the model reads right before answering."""
        parts: list[str] = []
        if self.config.preamble:
            parts.append(self.config.preamble.strip() + "\n")
        if self.docs is not None:
            index = self.docs.tree_text()
            if index:
                parts.append("## Documentation\n" + index + "\n")
        if task.environment:
            listing = "\n".join(f"- {p}" for p in sorted(task.environment))
            parts.append("## Task files\n" + listing + "\n")
        if tools:
            parts.append(TEXT_PROTOCOL + "\n")
        for path, text in self._prefetch(task):
            parts.append(f"## From {path}\n{text.strip()}\n")
        if self.notes is not None:
            block = self.notes.render()
            if block:
                parts.append(block)
        return "\n".join(parts)

    def _prefetch(self, task: Task) -> list[tuple[str, str]]:
        if self.docs is None or self.config.prefetch_docs <= 0:
            return []
        words = " ".join(re.findall(r"\w+", task.prompt))
        if not words:
            return []
        hits = self.docs.search(words, limit=self.config.prefetch_docs)
        return [(h.path, self.docs.read(h.path, 0, self.config.page_tokens).text) for h in hits]

    @staticmethod
    def _task_text(task: Task) -> str:
        return task_text(task.prompt)

    # -- 2 and 3. work, with attempts ----------------------------------------
    def _work(self, task: Task, outcome: Outcome) -> None:
        steps: list[str] = []  # working steps shown between the context and the task
        attempts = max(1, int(task.max_attempts))
        for attempt in range(1, attempts + 1):
            outcome.attempts = attempt
            self._step(f"attempt {attempt} of {attempts}")
            if self.config.protocol == "tools":
                answer = self._attempt_tools(task, steps, outcome.transcript)
            else:
                answer = self._attempt_text(task, steps, outcome.transcript)
            outcome.answer = answer
            try:
                outcome.score = task.score(answer)
            except Exception as exc:  # a broken checker fails this session, not the run
                outcome.score, outcome.error = None, f"checker of task {task.id or '?'} raised {exc!r}"
                return
            if outcome.score is None or outcome.score >= 1.0 or task.feedback is None:
                return
            try:
                said = task.feedback(answer, outcome.score)
            except Exception as exc:
                outcome.error = f"feedback of task {task.id or '?'} raised {exc!r}"
                return
            if not said:
                return
            outcome.feedback.append(said)
            outcome.transcript.append({"role": "user", "content": f"Feedback: {said}"})
            steps.append(f"Your answer: {answer}\nFeedback: {said}")

    def _attempt_text(self, task: Task, steps: list[str], transcript: list[Message]) -> str:
        has_files = self.docs is not None or bool(task.environment)
        contexts = {flag: self._context_block(task, tools=flag) for flag in {False, has_files}}
        for step in range(self.config.max_steps + 1):
            can_use_tools = has_files and step < self.config.max_steps
            context = contexts[can_use_tools]
            prompt = self._assemble(context, steps, task)
            prompt = self._compact_if_needed(prompt, context, steps, task)
            stop = list(self.config.stop) if self.config.stop is not None else ["\n\n\n", "\n## "]
            c = self._complete(prompt, max_tokens=self.config.max_tokens, stop=stop)
            reply = _first_line(c.text)
            transcript.append({"role": "assistant", "content": reply})
            command = _parse_command(reply) if can_use_tools else None
            if command is None:
                return _clean_answer(reply)
            verb, arg = command
            offset: object = 0
            if verb == "READ" and re.fullmatch(r".+\s\d+", arg):
                arg, _, offset = arg.rpartition(" ")
            self._step(f"{verb} {arg}")
            result = self._run_tool(task, verb, arg, offset)
            self._tool_calls += 1
            transcript.append({"role": "tool", "content": result})
            steps.append(f"> {verb} {arg}\n{result}")
        return ""

    def _assemble(self, context: str, steps: Sequence[str], task: Task) -> str:
        return assemble_prompt(context, steps, self._task_text(task))

    def _attempt_tools(self, task: Task, steps: list[str], transcript: list[Message]) -> str:
        """Native tool calls: the model calls read/search until it answers in text."""
        system = self._context_block(task) or "You are a careful assistant."
        messages: list[Message] = [{"role": "system", "content": system},
                                   {"role": "user", "content": task.prompt}]
        for s in steps:  # earlier attempts' feedback
            messages.append({"role": "user", "content": s})
        tools = _TOOL_SCHEMAS if (self.docs is not None or task.environment) else None
        for _ in range(self.config.max_steps + 1):
            c = self._complete(messages, max_tokens=self.config.max_tokens, tools=tools)
            if not c.tool_calls:
                transcript.append({"role": "assistant", "content": c.text})
                return c.text.strip()
            messages.append({"role": "assistant", "content": c.text or "",
                             "tool_calls": [{"id": t.id, "type": "function",
                                             "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
                                            for t in c.tool_calls]})
            for call in c.tool_calls:
                verb = "READ" if call.name == "read" else "SEARCH"
                arg = str(call.arguments.get("path") or call.arguments.get("query") or "")
                result = self._run_tool(task, verb, arg, call.arguments.get("offset") or 0)
                self._tool_calls += 1
                transcript.append({"role": "tool", "content": result, "name": call.name})
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
            tools = tools if len(messages) < 4 * (self.config.max_steps + 2) else None
        return ""

    def _run_tool(self, task: Task, verb: str, arg: str, offset: object = 0) -> str:
        """Run READ / SEARCH; errors become text the model can read and act on.

        What the model wrote is untrusted input: a path that names a folder, a
        name too long for the disk, an offset that is no number -- each comes
        back as an observation, and the session goes on."""
        try:
            return self._tool(task, verb, arg, offset)
        except LifelongError as exc:
            return f"(error: {exc.message})"
        except Exception as exc:  # a bug: the model still gets an answer, the run goes on
            self._bugs.append(f"{verb} {arg[:80]!r} raised {exc!r}")
            return f"(error: {verb} failed)"

    def _tool(self, task: Task, verb: str, arg: str, offset: object) -> str:
        try:
            offset = int(offset)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return f"(error: offset {str(offset)[:40]!r} is not a whole number)"
        if verb == "READ":
            path = arg.strip().strip("`'\"")
            if path in task.environment:
                text = task.environment[path]
                if not 0 <= offset <= len(text):
                    return f"(offset {offset} is outside {path}: {len(text)} characters)"
                end = page_end(text, offset, self.config.page_tokens, self.llm.count_tokens)
                chunk, more = text[offset:end], end < len(text)
            elif self.docs is None:
                return f"(no file {path!r}; files: {', '.join(sorted(task.environment)) or 'none'})"
            else:
                page = self.docs.read(path, offset, self.config.page_tokens)
                path, chunk, more, end = page.path, page.text, page.more, page.next_offset
            return chunk.strip() + (f"\n(more: READ {path} {end})" if more else "")
        if self.docs is None:
            return "(no documentation to search)"
        hits = self.docs.search(arg, limit=5)
        return "\n".join(f"- {h.path}" for h in hits) or "(no matches)"

    def _complete(self, prompt: str | list[Message], *, max_tokens: int, stop: list[str] | None = None,
                  tools: Any = None) -> Completion:
        c = self.llm.complete(prompt, max_tokens=max_tokens, stop=stop, temperature=self.config.temperature,
                              seed=self.config.seed, tools=tools)
        return self._budget.add(c)

    # -- compaction --------------------------------------------------------------
    def _compact_if_needed(self, prompt: str, context: str, steps: list[str], task: Task) -> str:
        limit = int(self.config.compact_at * self.llm.context_window) - self.config.max_tokens
        if len(steps) < 2 or self.llm.count_tokens(prompt) <= limit:
            return prompt
        older = "\n\n".join(steps[:-1])
        ask = ("Summarize these working steps in two or three sentences. Keep every decision, "
               "every fact found and every open question.\n\n" + older + "\n\nSummary:")
        c = self._complete(ask, max_tokens=96, stop=["\n\n"])
        steps[:-1] = [f"Summary of earlier steps: {c.text.strip()}"]
        self._compactions += 1
        return self._assemble(context, steps, task)

    # -- 4. reflection -----------------------------------------------------------
    def _reflect(self, task: Task, outcome: Outcome) -> None:
        result = _result_line(outcome)
        if self.notes is not None and self.config.note_ops:
            self._step("reflecting: a note")
            c = self._complete(self.note_prompt(task, outcome), max_tokens=self.config.reflection_max_tokens,
                               stop=["\n"])
            self.apply_note(c.text, task, outcome)
        if self.docs is not None:
            self._step("reflecting: documentation")
            prompt = "\n".join([
                "Write a documentation entry about the task below for future readers: what was asked, "
                "what was tried, what worked or failed, and the facts learnt. Use full sentences.", "",
                f"Task: {_one_line(task.prompt, 400)}", f"Answer given: {outcome.answer or '(none)'}",
                f"Result: {result}", "", "Documentation:"])
            c = self._complete(prompt, max_tokens=self.config.doc_max_tokens, stop=["\n\n\n"])
            entry = _without_repeats(_without_prompt_fields(c.text.strip()))
            outcome.transcript.append({"role": "reflection", "content": entry})
            try:
                path = self._write_doc(task, outcome, entry)
            except LifelongError as exc:  # e.g. the topic's file grew past its limit
                outcome.warnings.append(f"doc not written: {exc.message}")
                path = None
            except Exception as exc:
                self._bugs.append(f"doc entry raised {exc!r}")
                path = None
            if path:
                outcome.docs_written.append(path)

    def note_prompt(self, task: Task, outcome: Outcome) -> str:
        """The reflection prompt for the note, after ``task`` was worked on with this
        ``outcome``: instructions, the format examples, the current notes block (with
        ids, so an ``EDIT``/``DELETE`` can name one), the task, the answer and the result.
        This is what a writer model continues after "Note:"."""
        examples = "\n\n".join(REFLECTION_EXAMPLES)
        lines = [REFLECTION_INSTRUCTIONS, "", "Examples from other tasks, only to show the format:", "",
                 examples, "", "Your task.", self.notes.render().strip() or None,
                 f"Task: {_one_line(task.prompt, 400)}",
                 f"Answer given: {_one_line(outcome.answer, 400) or '(none)'}",
                 f"Result: {_result_line(outcome)}", "Note:"]
        return "\n".join(x for x in lines if x is not None)  # "" is a blank line

    def apply_note(self, written: str, task: Task, outcome: Outcome) -> int | None:
        """Carry out a reflection's note line (the model's continuation of
        :meth:`note_prompt`, first line only): add, ``EDIT``, ``DELETE`` or ``NONE``,
        with every check a session makes. Records it in the transcript and
        ``notes_written``; returns the note id touched, or None."""
        written = _first_line(written)
        outcome.transcript.append({"role": "reflection", "content": written})
        try:
            note_id = self._apply_note(written, task, outcome.session_id, outcome)
        except Exception as exc:  # a bug: the note is lost, not the session
            self._bugs.append(f"note {written[:80]!r} raised {exc!r}")
            note_id = None
        if note_id is not None:
            outcome.notes_written.append(note_id)
        return note_id

    def _seen(self, task: Task, outcome: Outcome) -> list[str]:
        """Everything the session showed the model: what a note may state."""
        seen = [task.prompt, outcome.answer, *outcome.feedback, self.config.preamble or ""]
        seen += [str(m.get("content") or "") for m in outcome.transcript if m.get("role") != "reflection"]
        if self.notes is not None:
            seen.append(self.notes.render())
        if self.docs is not None:
            seen.append(self.docs.tree_text())
            seen += [text for _, text in self._prefetch(task)]
        return seen

    def _refusal(self, text: str, task: Task, outcome: Outcome) -> str | None:
        """Why a reflected note must not be stored, or None. The note must not repeat
        the prompt's examples, and (``ground_notes``) its specifics must come from the session."""
        seen = self._seen(task, outcome)
        copied = leaked(text, "\n".join(REFLECTION_EXAMPLES), seen)
        if copied:
            return f"it repeats the prompt's example ({', '.join(sorted(copied))}), not the task"
        if self.config.ground_notes:
            made_up = ungrounded(text, seen)
            if made_up:
                return f"{', '.join(sorted(made_up))} appear(s) nowhere in the session"
        return None

    def _check_storable(self, text: str) -> None:
        """Whether the text can be a note at all (the store's own checks) comes first:
        its message then says what is wrong with it, before whether it should be one."""
        check = getattr(self.notes, "check_text", None)
        if check is not None:
            check(text)

    def _already_noted(self, text: str) -> int | None:
        """The id of an active note that already states ``text``'s facts in mostly the
        same words (a restatement the duplicate check's 0.8 threshold lets through)."""
        keys, words = key_terms(text), content_words(text)
        for note in self.notes.list():
            theirs = content_words(note.text) | key_terms(note.text)
            if keys <= theirs and words and len(words & theirs) >= 0.6 * len(words):
                return note.id
        return None

    def _apply_note(self, written: str, task: Task, sid: str, outcome: Outcome) -> int | None:
        """Carry out what reflection wrote: a new note, an edit or a deletion, after
        checking that a new text repeats no example, invents nothing and is news."""
        text = written.strip().strip('"')
        if not text or text.upper().startswith("NONE"):
            return None
        ops = self.config.note_ops
        meta = {"session": sid, "task": task.id}
        try:
            m = re.match(r"^(EDIT|DELETE)\s*\[?(\d+)\]?\s*:?\s*(.*)$", text, re.I)
            if m:
                # Ids past 2^63 name no note (Notes says so); int() refuses thousands
                # of digits, so an absurdly long one is cut to "past 2^63" first.
                digits = m.group(2).lstrip("0") or "0"
                nid = int(digits) if len(digits) <= 100 else MAX_NOTE_ID + 1
                verb, rest = m.group(1).upper(), m.group(3).strip()
                if verb == "DELETE" and "delete" in ops:
                    self.notes.delete(nid, reason="reflection", **meta)
                    return nid
                if verb == "EDIT" and rest and ({"edit", "supersede"} & ops):
                    self._check_storable(rest)
                    why = self._refusal(rest, task, outcome)
                    if why:
                        outcome.warnings.append(f"note not written: {why}")
                        return None
                    return self.notes.supersede(nid, rest, **meta).id
                return None
            if "add" not in ops:
                return None
            self._check_storable(text)
            why = self._refusal(text, task, outcome)
            if why:
                outcome.warnings.append(f"note not written: {why}")
                return None
            known = self._already_noted(text)
            if known is not None:
                outcome.warnings.append(f"note not written: note {known} already says this")
                return None
            res = self.notes.add(text, tags=[task.family] if task.family else [], **meta)
            return res.note.id
        except BudgetExceededError as exc:
            # Never truncate: the note is refused and the refusal reported.
            outcome.warnings.append(f"note refused: {exc.message}")
            return None
        except LifelongError as exc:  # empty, over-long, unknown id: not written
            outcome.warnings.append(f"note not written: {exc.message}")
            return None

    def _write_doc(self, task: Task, outcome: Outcome, entry: str) -> str | None:
        """Append the entry and the session's record to the topic's file (one file per topic)."""
        topic = re.sub(r"[^\w.-]+", "-", task.family or "general").strip("-") or "general"
        path = f"{topic}.md"
        record = [f"## Session {outcome.session_id} — task {task.id or outcome.session_id}", ""]
        if entry:
            record += [entry, ""]
        # Worded so a reader does not mistake the record for an answer to copy.
        record += ["Record:", f"- task: {_one_line(task.prompt, 300)}",
                   f"- tried: {outcome.answer or 'nothing'}", f"- outcome: {_result_line(outcome)}"]
        for f in outcome.feedback:
            record.append(f"- feedback: {f}")
        section = "\n".join(record) + "\n"
        meta = {"session": outcome.session_id, "task": task.id}
        if self.docs.exists(path):
            self.docs.append(path, "\n" + section, **meta)
        else:
            self.docs.write(path, f"# {topic}\n\n{section}", description=f"What was learnt on {topic} tasks",
                            tags=[topic] if is_tag(topic) else None, **meta)
        return path

    # -- the stored transcript ---------------------------------------------------
    def _store_transcript(self, task: Task, outcome: Outcome) -> None:
        if self.config.transcript_dir is None:
            return
        ns = getattr(self.notes, "namespace", None) or getattr(self.docs, "namespace", None) or "default"
        path = Path(self.config.transcript_dir) / ns / f"{outcome.session_id}.json"
        record = {"task": {"id": task.id, "family": task.family, "prompt": task.prompt},
                  "model": getattr(self.llm, "name", ""), "outcome": outcome.to_dict()}
        text = json.dumps(record, indent=1, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a reply held a lone surrogate: escape it, as JSON can
            text = json.dumps(record, indent=1)
        try:
            atomic_write_text(path, text)
        except OSError as exc:  # the session's work is done; losing its record must not undo it
            outcome.warnings.append(f"transcript not stored in {path.parent}: {exc.strerror or exc}")


# -- the text protocol's prompt ------------------------------------------------------


def task_text(prompt: str) -> str:
    """The task as the model reads it. A base model needs a cue to answer; a
    task's own cue (a prompt ending in ':') is kept."""
    text = prompt.rstrip()
    return text if text.endswith(":") else text + "\nAnswer:"


def assemble_prompt(context: str, steps: Sequence[str], text: str) -> str:
    """The text-protocol prompt: the context block (indexes, pages, notes), the
    working steps so far, then the task (``task_text``). A reader with notes and
    no tools sends ``assemble_prompt(notes_block, [], task_text(prompt))``."""
    parts = [context] if context else []
    if steps:
        parts.append("\n\n".join(steps) + "\n")
    parts.append("## Task\n" + text)
    return "\n".join(parts)


def recorded_task_prompts(transcript_dir: str | Path, namespace: str, limit: int | None = None) -> list[str]:
    """The prompts of the tasks a namespace's sessions recorded (newest first,
    duplicates dropped): what its work looks like. Unreadable files are skipped."""
    folder = Path(transcript_dir) / namespace
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    prompts: list[str] = []
    for f in files:
        try:
            prompt = json.loads(f.read_text(encoding="utf-8"))["task"]["prompt"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(prompt, str) and prompt.strip() and prompt not in prompts:
            prompts.append(prompt)
            if limit is not None and len(prompts) >= limit:
                break
    return prompts


# -- helpers ------------------------------------------------------------------------

_TOOL_SCHEMAS = [
    {"type": "function", "function": {
        "name": "read", "description": "Read a page of a documentation or task file.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string"}, "offset": {"type": "integer", "default": 0}},
            "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the documentation; returns matching paths.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}},
]


def _without_repeats(text: str) -> str:
    """Drop sentences already said: small models loop ("It is not working. It is not working.")."""
    seen: set[str] = set()
    kept = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        key = " ".join(sentence.lower().split())
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
    return " ".join(kept)


def _text_of(content: Any) -> str:
    """The text of a chat message's content: a string, or OpenAI's list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _without_prompt_fields(text: str) -> str:
    """Drop what a small model copies from the documentation prompt itself
    ("Task: … Answer given: … Result: …"): the record below the entry states it."""
    parts = re.split(r"(?:^|\s)(?=(?:Task|Answer given|Result|Feedback|Documentation|Record):)", text)
    kept = [p.strip() for p in parts
            if p.strip() and not re.match(r"(Task|Answer given|Result|Feedback|Documentation|Record):", p.strip())]
    return " ".join(kept)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _parse_command(reply: str) -> tuple[str, str] | None:
    m = re.match(r"^(READ|SEARCH)\s+(\S.*)$", reply.strip())
    return (m.group(1), m.group(2).strip()) if m else None


def _clean_answer(reply: str) -> str:
    return re.sub(r"^(ANSWER|Answer)\s*:\s*", "", reply.strip())


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _result_line(outcome: Outcome) -> str:
    if outcome.score is None:
        verdict = "not checked"
    elif outcome.score >= 1.0:
        verdict = "correct"
    elif outcome.score > 0:
        verdict = f"partly correct ({outcome.score:.2f})"
    else:
        verdict = "wrong"
    if outcome.feedback:
        return f"{verdict}. Feedback: {outcome.feedback[-1]}"
    return verdict + "."
