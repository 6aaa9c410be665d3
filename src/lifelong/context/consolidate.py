"""Consolidation: a model rewrites the note set into fewer tokens.

The seed *Prosaic continual learning*: memories grow with every task, so they
must be edited and compressed over time, and a newer model inheriting them
"immediately works on improving and compressing them". ``consolidate`` asks a
model (any model: the one that wrote the notes, or its successor) to

- merge notes that say the same thing (``[3,5] merged text``),
- drop notes that are stale or contradicted (``DROP [4]``),
- move detail into the documentation (``DOC topic.md: the detail``).

The plan is checked before anything is written (:func:`check_plan`): it must
name only active notes; every fact of a note it replaces must still be stated
(in the new note or a ``DOC`` line); a ``DROP`` must retire a note that is
stale or whose facts are kept elsewhere; no line may repeat the prompt's
worked example or duplicate a note; and the rendered block must get smaller
in tokens (counted by the notes' tokenizer). Lines that fail are left out and
reported; a note the plan does not mention is kept, so a model that writes
nothing useful changes nothing. :func:`propose` makes a checked plan (its
``diff()`` is what ``lifelong consolidate --dry-run`` prints) and :func:`apply`
carries it out; applied plans supersede and soft-delete, so the previous set
stays recoverable from each note's history.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifelong.context.grounding import leaked, lost_facts, restates_subject
from lifelong.context.notes import (
    Note,
    Notes,
    OverBudget,
    is_near_duplicate,
    normalize,
    render_notes,
)
from lifelong.errors import LifelongError, StoreError
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
    refused: list[tuple[str, str]] = field(default_factory=list)  # (the line, why it was left out)

    @property
    def destructive(self) -> bool:
        """Whether notes leave the block (superseded or dropped); a person confirms these."""
        return bool(self.drops or self.merges)

    def empty(self) -> bool:
        return not (self.merges or self.drops or self.docs)


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
    block_before: str = ""  # the notes block the plan was made for
    block_after: str = ""  # the block as the plan leaves it (ids of new notes as they will be)
    snapshot: tuple[tuple[int, str], ...] = ()  # (id, text) of the active notes the plan was checked on

    def diff(self) -> list[str]:
        """The plan as a diff of the notes block ('-' leaves, '+' arrives, ' ' stays),
        then the text each ``DOC`` line adds to the documentation."""
        # without the "## Notes" header and the bullets
        before = [x.removeprefix("- ") for x in self.block_before.splitlines()[1:]]
        after = [x.removeprefix("- ") for x in self.block_after.splitlines()[1:]]
        lines = [line for line in difflib.ndiff(before, after) if not line.startswith("?")]
        lines += [f"+ docs/{path}: {text}" for path, text in self.plan.docs]
        return lines


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


def check_plan(plan: Plan, active: list[Note], notes: Notes) -> Plan:
    """Keep only what loses nothing; every line left out is recorded in ``plan.refused``.

    - A merge must still state every fact (:func:`~lifelong.context.grounding.lost_facts`)
      of each note it replaces, in its own text or in a ``DOC`` line; it must not
      repeat the prompt's worked example; it must be a valid note; and it must not
      duplicate (exactly or nearly) a note that stays or another merge.
    - A ``DROP`` is an explicit retirement, accepted when the note's facts are still
      stated by the notes that stay or moved to docs, or when a newer note that
      stays speaks about the same subject (the note is stale or contradicted).
    """
    by_id = {n.id: n for n in active}
    order = {n.id: k for k, n in enumerate(active)}
    checked = Plan(docs=[], source=plan.source, refused=list(plan.refused))
    sources = [n.text for n in active]
    for path, text in plan.docs:
        copied = leaked(text, EXAMPLE, sources)
        if copied:
            checked.refused.append((f"DOC {path}: {text}", "repeats the prompt's example "
                                    f"({', '.join(sorted(copied))})"))
        else:
            checked.docs.append((path, text))
    doc_texts = [text for _, text in checked.docs]
    for ids, text in plan.merges:
        if len(ids) == 1 and by_id[ids[0]].text == text:
            continue  # kept as it is: not a change
        line = f"[{','.join(map(str, ids))}] {text}"
        why = None
        try:
            notes.check_text(text)
        except LifelongError as exc:
            why = exc.message
        copied = leaked(text, EXAMPLE, sources)
        if why is None and copied:
            why = f"repeats the prompt's example ({', '.join(sorted(copied))})"
        if why is None:
            for nid in ids:
                lost = lost_facts(by_id[nid].text, [text, *doc_texts])
                if lost:
                    why = f"would lose {', '.join(sorted(lost))} of note {nid}"
                    break
        if why is None:
            checked.merges.append((ids, text))
        else:
            checked.refused.append((line, why))
    # No duplicates: a merged text must not say what a note that stays, or an earlier merge, says.
    # (A refused merge leaves its notes in place, which the others are then checked against.)
    threshold = notes.near_duplicate_threshold
    while True:
        gone = {i for ids, _ in checked.merges for i in ids}
        staying = [n.text for n in active if n.id not in gone]
        kept_merges: list[tuple[list[int], str]] = []
        for ids, text in checked.merges:
            twin = next((other for other in staying + [t for _, t in kept_merges]
                         if normalize(other) == normalize(text)
                         or is_near_duplicate(text, other, threshold)[0]), None)
            if twin is None:
                kept_merges.append((ids, text))
            else:
                checked.refused.append((f"[{','.join(map(str, ids))}] {text}",
                                        f"would duplicate the note {twin!r}"))
        if len(kept_merges) == len(checked.merges):
            break
        checked.merges = kept_merges
    gone = {i for ids, _ in checked.merges for i in ids}
    for nid in plan.drops:
        if nid in gone:
            continue
        note = by_id[nid]
        # the notes that stay if this one goes, and which of them are newer
        stays = [(order[n.id], n.text) for n in active if n.id not in gone and n.id != nid
                 and n.id not in checked.drops]
        stays += [(len(active) + k, text) for k, (_, text) in enumerate(checked.merges)]
        lost = lost_facts(note.text, [t for _, t in stays] + doc_texts)
        newer = [t for k, t in stays if k > order[nid]]
        if not lost or any(restates_subject(note.text, t) for t in newer):
            checked.drops.append(nid)
        else:
            checked.refused.append((f"DROP [{nid}]", f"would lose {', '.join(sorted(lost))} "
                                    f"({note.text!r}); no newer note replaces it"))
    return checked


def planned_block(active: list[Note], plan: Plan) -> str:
    """The notes block as it will render after the plan: unmentioned notes kept,
    merged notes appended with the ids they will get."""
    gone = {i for ids, _ in plan.merges for i in ids} | set(plan.drops)
    lines = [f"- [{n.id}] {n.text}" for n in active if n.id not in gone]
    next_id = max((n.id for n in active), default=0) + 1
    for k, (_, text) in enumerate(plan.merges):
        lines.append(f"- [{next_id + k}] {text}")
    return "## Notes\n" + "\n".join(x.replace("\n", "\n  ") for x in lines) + "\n" if lines else ""


def propose(llm: LLM | None, notes: Notes, *, max_tokens: int = 256, seed: int = 0,
            on_step: Callable[[str], None] | None = None) -> ConsolidationResult:
    """Ask ``llm`` for a plan (``None``: only merge near duplicates), check it, and
    return it unapplied: ``result.diff()`` shows it, :func:`apply` carries it out."""
    step = on_step or (lambda _what: None)
    active = notes.list("active")
    before_block = render_notes(active)
    before = notes.count_tokens(before_block)
    by_id = {n.id: n for n in active}
    snapshot = tuple((n.id, n.text) for n in active)
    output = ""
    candidates: list[Plan] = []
    if llm is not None and len(active) >= 2:
        step(f"asking {getattr(llm, 'name', 'the model')} for a plan ({len(active)} notes)")
        listing = "\n".join(f"- [{n.id}] {' '.join(n.text.split())}" for n in active)
        prompt = f"{INSTRUCTIONS}\n\n{EXAMPLE}\n\nOld notes:\n{listing}\nNew notes:\n"
        c = llm.complete(prompt, max_tokens=max_tokens, stop=["\nEND", "\nOld notes:"], temperature=0.0,
                         seed=seed)
        output = c.text
        candidates.append(parse_plan(output, by_id))
    candidates.append(duplicates_plan(active, notes.near_duplicate_threshold))

    step("checking the plan")
    refused: list[tuple[str, str]] = []
    for raw in candidates:
        plan = check_plan(raw, active, notes)
        refused += plan.refused
        if plan.empty():
            continue
        after_block = planned_block(active, plan)
        after = notes.count_tokens(after_block)
        if after >= before and not (plan.docs and after <= before):
            refused.append((f"the {plan.source} plan", f"would not make the notes smaller "
                            f"({before} → {after} tokens)"))
            continue
        plan.refused = refused
        return ConsolidationResult(False, f"{plan.source} plan: {before} → {after} tokens", before, after,
                                   plan, model_output=output, block_before=before_block,
                                   block_after=after_block, snapshot=snapshot)
    kept = Plan(refused=refused)
    return ConsolidationResult(False, "no plan made the notes smaller and lost nothing; nothing changed",
                               before, before, kept, model_output=output, block_before=before_block,
                               block_after=before_block, snapshot=snapshot)


def apply(result: ConsolidationResult, notes: Notes, docs: Any | None = None) -> ConsolidationResult:
    """Carry out a plan made by :func:`propose`, if the notes are still those it was
    checked on (else nothing changes: make a new plan)."""
    if result.applied or result.plan.empty():
        return result
    current = tuple((n.id, n.text) for n in notes.list("active"))
    if current != result.snapshot:
        raise StoreError("the notes changed since this plan was made; nothing was applied",
                         hint="make a new plan (run consolidate again)")
    _apply(result.plan, notes, docs, result)
    result.applied = True
    result.tokens_after = notes.tokens()
    return result


def consolidate(llm: LLM | None, notes: Notes, docs: Any | None = None, *, max_tokens: int = 256,
                seed: int = 0, dry_run: bool = False,
                on_step: Callable[[str], None] | None = None) -> ConsolidationResult:
    """Rewrite ``notes`` smaller with ``llm`` (``None``: only merge near duplicates):
    :func:`propose`, then :func:`apply` unless ``dry_run``."""
    result = propose(llm, notes, max_tokens=max_tokens, seed=seed, on_step=on_step)
    if result.plan.empty():
        return result
    if dry_run:
        result.reason = "dry run: " + result.reason
        return result
    return apply(result, notes, docs)


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
    for nid in plan.drops:  # shrink first: a block at its budget has room for the merges then
        notes.delete(nid, reason="consolidation: stale or contradicted", **meta)
        result.dropped.append(nid)
    for ids, text in plan.merges:
        new = notes.supersede(ids, text, **meta)
        result.created.append(new.id)
        result.superseded.extend(ids)


def _ids(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def consolidation_hook(llm: LLM | None, docs: Any | None = None) -> Callable[[Notes, OverBudget], None]:
    """An ``on_over_budget`` hook for :class:`Notes`: consolidate, then the write is retried."""

    def hook(notes: Notes, info: OverBudget) -> None:
        consolidate(llm, notes, docs)

    return hook
