"""A scripted stand-in for a session, to pin down the harness's own logic.

It answers a task correctly exactly when the fact the task needs is in its
context (notes, docs or pasted transcript), and its reflection writes that
fact as a note (and a doc page) through the real ``Notes`` / ``Docs`` objects.
What users run is the real ``Session``; see test_end_to_end.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ScriptedLLM:
    name: str = "scripted"
    context_window: int = 8192

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@dataclass
class ScriptedOutcome:
    answer: str
    score: float | None
    attempts: int = 1
    transcript: list = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_tokens: int = 0
    latency_s: float = 0.0
    notes_written: list = field(default_factory=list)
    docs_written: list = field(default_factory=list)
    error: str | None = None


class ScriptedSession:
    calls: list = []  # (task id, options) of every run, for assertions

    def __init__(self, llm, notes, docs, options):
        self.llm, self.notes, self.docs, self.options = llm, notes, docs, options

    def run(self, task):
        ScriptedSession.calls.append((task.id, dict(self.options)))
        context = "\n".join(filter(None, [
            self.notes.render() if self.notes is not None else "",
            "\n".join(self.docs.read(d.path).text for d in self.docs.tree()) if self.docs is not None else "",
            self.options.get("preamble") or "",
            *task.environment.values(),
        ]))
        statement = task.metadata.get("statement", "")
        known = bool(statement) and statement in context
        answer = str(task.metadata.get("answer", "")) if known else "I do not know"
        try:
            score = task.score(answer)
            error = None
        except Exception as exc:  # the Session's contract: a raising checker fails the session
            score, error = None, f"checker raised {type(exc).__name__}: {exc}"
        transcript = [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": answer}]
        attempts = 1
        if score is not None and score < 1 and task.feedback is not None and task.max_attempts > 1:
            said = task.feedback(answer, score)
            transcript.append({"role": "user", "content": said})
            answer = str(task.metadata.get("answer", ""))
            transcript.append({"role": "assistant", "content": answer})
            score, attempts = task.score(answer), 2
        written, docs_written = [], []
        if self.options["reflect"] and statement:
            if self.notes is not None and "add" in self.options["note_ops"]:
                written.append(self.notes.add(statement).note.id)
            if self.docs is not None and self.options["use_docs"]:
                path = f"{task.metadata.get('fact', task.metadata.get('rule', 'fact'))}.md"
                self.docs.write(path, statement + "\n")
                docs_written.append(path)
        prompt = context + "\n" + task.prompt
        return ScriptedOutcome(
            answer=answer, score=score, attempts=attempts, transcript=transcript,
            prompt_tokens=self.llm.count_tokens(prompt), completion_tokens=3,
            context_tokens=self.llm.count_tokens(prompt), notes_written=written,
            docs_written=docs_written, error=error,
        )
