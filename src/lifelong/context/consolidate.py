"""Consolidation: a model rewrites the note set into fewer tokens.

The seed *Prosaic continual learning*: memories grow with every task, so they
must be edited and compressed over time, and a newer model inheriting them
"immediately works on improving and compressing them". ``consolidate`` asks a
model (any model: the one that wrote the notes, or its successor) to

- merge notes that say the same thing (``[3,5] merged text``),
- drop notes that are stale or contradicted (``DROP [4]``),
- move detail into the documentation (``DOC topic.md: the detail``).

The plan is checked before anything is written: it must name only active
notes and make the rendered block smaller in tokens (counted by the notes'
tokenizer). A note the plan does not mention is kept: a model that writes
nothing useful changes nothing. Applied plans supersede and soft-delete, so
the previous set stays recoverable from each note's history.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifelong.context.notes import Note, Notes, OverBudget, is_near_duplicate, render_notes
from lifelong.errors import LifelongError
from lifelong.llm.base import LLM

INSTRUCTIONS = """\
Rewrite the notes into fewer, shorter notes. Merge notes that say the same thing, drop notes that \
are stale or contradicted by a later note, and move long details to the documentation.
Write one line per new note as "[old ids] text". Write "DROP [ids]" to remove notes. Write \
"DOC file.md: text" to move a detail into the documentation. End with END."""

EXAMPLE = """\
Old notes:
- [1] The office is in Berlin.
- [2] The office moved to Munich in May.
- [3] Reports are due Friday.
- [4] Weekly reports are due on Friday at noon, sent to the team lead as a PDF named report-WEEK.pdf.
New notes:
[2] The office is in Munich (since May).
DROP [1]
[3,4] Weekly reports are due Friday at noon.
DOC reports.md: Weekly reports go to the team lead as a PDF named report-WEEK.pdf.
END"""


@dataclass
class Plan:
    """What consolidation will do, checked before it is applied."""

    merges: list[tuple[list[int], str]] = field(default_factory=list)  # (old ids, new text)
    drops: list[int] = field(default_factory=list)
    docs: list[tuple[str, str]] = field(default_factory=list)  # (path, text)
    source: str = "model"  # "model" | "duplicates"


@dataclass
class ConsolidationResult:
    applied: bool
    reason: str
    tokens_before: int
    tokens_after: int
    plan: Plan
    created: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    docs_written: list[str] = field(default_factory=list)
    model_output: str = ""


def parse_plan(text: str, active: dict[int, Note]) -> Plan:
    """Read the model's lines; lines that name unknown notes or say nothing are skipped."""
    plan = Plan()
    used: set[int] = set()
    for raw in text.splitlines():
        line = raw.strip().lstrip("-* ").strip()
        if not line:
            continue
        if line.upper().startswith("END"):
            break
        m = re.match(r"^DROP\s*\[?([\d,\s]+)\]?\s*$", line, re.I)
        if m:
            for nid in _ids(m.group(1)):
                if nid in active and nid not in used:
                    plan.drops.append(nid)
                    used.add(nid)
            continue
        m = re.match(r"^DOC\s+([\w./-]+\.md)\s*:\s*(.+)$", line, re.I)
        if m:
            plan.docs.append((m.group(1), m.group(2).strip()))
            continue
        m = re.match(r"^\[([\d,\s]+)\]\s*(.+)$", line)
        if m:
            ids = [i for i in _ids(m.group(1)) if i in active and i not in used]
            body = m.group(2).strip()
            if ids and body:
                plan.merges.append((ids, body))
                used.update(ids)
    return plan


def duplicates_plan(active: list[Note], threshold: float = 0.8) -> Plan:
    """A plan that needs no model: near-duplicate notes merged into their longest wording."""
    plan = Plan(source="duplicates")
    taken: set[int] = set()
    for i, a in enumerate(active):
        if a.id in taken:
            continue
        group = [a] + [b for b in active[i + 1:]
                       if b.id not in taken and is_near_duplicate(a.text, b.text, threshold)[0]]
        if len(group) > 1:
            best = max(group, key=lambda n: (len(n.text), n.id))
            plan.merges.append(([n.id for n in group], best.text))
            taken.update(n.id for n in group)
    return plan


def planned_block(active: list[Note], plan: Plan) -> str:
    """The notes block as it will render after the plan: unmentioned notes kept,
    merged notes appended with the ids they will get."""
    gone = {i for ids, _ in plan.merges for i in ids} | set(plan.drops)
    lines = [f"- [{n.id}] {n.text}" for n in active if n.id not in gone]
    next_id = max((n.id for n in active), default=0) + 1
    for k, (_, text) in enumerate(plan.merges):
        lines.append(f"- [{next_id + k}] {text}")
    return "## Notes\n" + "\n".join(x.replace("\n", "\n  ") for x in lines) + "\n" if lines else ""


def consolidate(llm: LLM | None, notes: Notes, docs: Any | None = None, *, max_tokens: int = 256,
                seed: int = 0, dry_run: bool = False) -> ConsolidationResult:
    """Rewrite ``notes`` smaller with ``llm`` (``None``: only merge near duplicates)."""
    active = notes.list("active")
    before = notes.count_tokens(render_notes(active))
    by_id = {n.id: n for n in active}
    output = ""
    candidates: list[Plan] = []
    if llm is not None and len(active) >= 2:
        listing = "\n".join(f"- [{n.id}] {' '.join(n.text.split())}" for n in active)
        prompt = f"{INSTRUCTIONS}\n\n{EXAMPLE}\n\nOld notes:\n{listing}\nNew notes:\n"
        c = llm.complete(prompt, max_tokens=max_tokens, stop=["\nEND", "\nOld notes:"], temperature=0.0,
                         seed=seed)
        output = c.text
        candidates.append(parse_plan(output, by_id))
    candidates.append(duplicates_plan(active, notes.near_duplicate_threshold))

    for plan in candidates:
        if not (plan.merges or plan.drops or plan.docs):
            continue
        after = notes.count_tokens(planned_block(active, plan))
        if after >= before and not (plan.docs and after <= before):
            continue
        result = ConsolidationResult(True, f"{plan.source} plan: {before} → {after} tokens", before, after,
                                     plan, model_output=output)
        if dry_run:
            result.applied, result.reason = False, "dry run: " + result.reason
            return result
        _apply(plan, notes, docs, result)
        result.tokens_after = notes.tokens()
        return result
    return ConsolidationResult(False, "no plan made the notes smaller; nothing changed", before, before,
                               candidates[0] if candidates else Plan(), model_output=output)


def _apply(plan: Plan, notes: Notes, docs: Any | None, result: ConsolidationResult) -> None:
    meta = {"session": "consolidation", "task": "consolidate"}
    for path, text in plan.docs:  # detail first, so nothing is dropped before it is kept
        if docs is None:
            continue
        try:
            if docs.exists(path):
                docs.append(path, "\n" + text + "\n", **meta)
            else:
                docs.write(path, text + "\n", description="Details moved out of the notes", **meta)
            result.docs_written.append(path)
        except LifelongError:
            continue
    for ids, text in plan.merges:
        if len(ids) == 1 and notes.get(ids[0]).text == text:
            continue  # kept as it is
        new = notes.supersede(ids, text, **meta)
        result.created.append(new.id)
        result.superseded.extend(ids)
    for nid in plan.drops:
        notes.delete(nid, reason="consolidation: stale or contradicted", **meta)
        result.dropped.append(nid)


def _ids(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def consolidation_hook(llm: LLM | None, docs: Any | None = None) -> Callable[[Notes, OverBudget], None]:
    """An ``on_over_budget`` hook for :class:`Notes`: consolidate, then the write is retried."""

    def hook(notes: Notes, info: OverBudget) -> None:
        consolidate(llm, notes, docs)

    return hook
