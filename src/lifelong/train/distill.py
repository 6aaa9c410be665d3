"""Context distillation: a namespace's notes trained into a LoRA adapter of the model.

Seed *003* says a model's two memories, context and weights, have "no pathway
from context to weights"; seed *000* sketches one: the lessons of the last hour
"trained into a copy of the model, which is then seamlessly switched out". This
recipe is that pathway for lifelong's notes (and, optionally, its docs).

The method is context distillation (Snell, Klein & Zhong 2022, *Learning by
Distilling Context*, §2):

- **teacher**: the model with the notes in its context, in exactly the prompt a
  reader session sends (``assemble_prompt(notes block, [], task_text(prompt))``);
- **student**: the same model without the notes, plus a LoRA adapter (Hu et al.
  2021, eq. 3: ``h = W0·x + (α/r)·B·A·x``; only A and B train, B starts at 0 so
  the student starts as the base model);
- **inputs**: prompts made from the notes themselves — questions the model
  writes about each note, cloze prompts cut from each note — the namespace's
  recorded task prompts, and general questions the model writes with no note
  in sight (the teacher answers those as the base model would, so the student
  learns to leave them alone);
- **loss**: at every position of the teacher's greedy answer, the forward KL
  divergence ``KL(p_teacher ‖ p_student)`` between the next-token
  distributions (Hinton, Vinyals & Dean 2015's soft targets at temperature 1).
  The teacher's distribution is stored as its ``top_k`` tokens plus one bucket
  for the rest of the vocabulary: ``topk_kl`` is the exact KL of those
  coarsened distributions — a lower bound of the full KL (``kl_naive``, the
  float64 reference) that equals it when k is the vocabulary.

Later rounds start from the current adapter and add new notes without
forgetting the earlier ones by **replay**: every round stores its examples
(prompts, teacher answers, teacher top-k) with its adapter version, and each
epoch of a new round mixes in up to ``replay`` × as many examples drawn from the
earlier rounds of the chain. The teacher of a new round sees every note the
adapter is to hold (``teacher_notes="all"``: the earlier rounds' notes, even
retired ones, plus the active block), so a recorded task about an old note is
labelled by a teacher who still knows it.

The baseline ``objective="raw"`` fine-tunes the same adapter on the raw note
text (next-token cross-entropy, i.e. the KL to a one-hot target) with the same
loop, replay and bookkeeping.

Safety: a round is built in the namespace's ``.work`` folder: its plan, then its
data (written whole), then checkpoints (adapter + optimizer state) every
``checkpoint_every`` steps and when the time budget runs out. Only a finished
adapter becomes a version and then the current one
(:class:`lifelong.llm.adapters.AdapterStore`), so the previous adapter serves
until then. Run again to resume an interrupted round from its last checkpoint
(the result equals an uninterrupted run; nothing in a checkpoint is a pickle), or pass ``rollback=True`` to discard
it. Retiring consolidated notes is a soft delete with a reason that names the
version; :func:`use_version` moves back to an earlier version and restores the
notes the later versions had retired.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.atomic import atomic_write_text
from lifelong.context.notes import Notes, render_notes
from lifelong.context.session import assemble_prompt, task_text
from lifelong.errors import ConfigError, LifelongError, NotFoundError, ValidationError
from lifelong.llm.adapters import AdapterStore, AdapterVersion, base_fingerprint

RETIRE_REASON = "consolidated into weights: adapter v{version}"
Progress = Callable[[str, int, int], None]  # (stage, done, total); stages: prompts, teacher, train


@dataclass
class DistillConfig:
    """One consolidation round. The defaults suit the embedded 270M model on a CPU."""

    # the adapter (LoRA, Hu et al. 2021 eq. 3)
    rank: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                       "down_proj")
    # the training inputs
    questions_per_note: int = 4  # model-written questions per note (fewer survive the filter)
    cloze_per_note: int = 1  # "complete the sentence" prompts cut from each note
    general_prompts: int = 8  # model-written questions on nothing in the notes
    recorded_tasks: int = 32  # most recent recorded task prompts of the namespace
    question_temperature: float = 0.8
    question_max_tokens: int = 32
    # the teacher
    answer_max_tokens: int = 16  # the teacher's answer: up to the end of its first line
    top_k: int = 64  # teacher tokens kept per position (the rest is one bucket)
    teacher_notes: str = "all"  # "all": earlier rounds' notes too | "active": the notes block as it is
    # training
    objective: str = "distill"  # "distill" (KL to the teacher) | "raw" (LM loss on the note text)
    epochs: int = 3
    batch_size: int = 4
    lr: float = 5e-4
    replay: float = 1.0  # earlier rounds' examples per new example, each epoch (all, when fewer)
    max_steps: int | None = None  # a step budget; it must cover one epoch of the new examples
    max_seconds: float | None = None  # a time budget for training; past it the round checkpoints and stops
    checkpoint_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in ("distill", "raw"):
            raise ConfigError(f"unknown objective {self.objective!r}", hint="use distill or raw")
        if self.teacher_notes not in ("all", "active"):
            raise ConfigError(f"unknown teacher_notes {self.teacher_notes!r}", hint="use all or active")
        for name in ("rank", "top_k", "epochs", "batch_size", "checkpoint_every", "answer_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("questions_per_note", "cloze_per_note", "general_prompts", "recorded_tasks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.replay < 0 or self.lr <= 0:
            raise ConfigError("replay must be >= 0 and lr > 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds}")
        self.target_modules = tuple(self.target_modules)


# -- the loss --------------------------------------------------------------------------------


def topk_kl(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Forward KL(p_teacher ‖ p_student) per position, the teacher kept as top-k + a rest bucket.

    ``student_logits``: [N, V]; ``teacher_ids``/``teacher_logp``: [N, k] (padding
    entries have logp = -inf). With p the teacher's top-k probabilities,
    p_rest = 1 − Σp and q the student's on the same tokens:

        KL = Σ_i p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest)

    the exact KL between the two distributions coarsened to {top-k tokens, rest}.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float64 stays float64
    s_logp = torch.log_softmax(student_logits.to(dtype), dim=-1)
    s_top = s_logp.gather(-1, teacher_ids)
    t_logp = teacher_logp.to(dtype)
    p = t_logp.exp()
    kept = p > 0
    top = torch.where(kept, p * (t_logp - s_top), torch.zeros_like(p)).sum(-1)
    p_rest = (1.0 - p.sum(-1)).clamp(min=0.0)
    # log(1 − Σq) computed from the log-sum-exp, stable when Σq is near 0 or 1
    s_mass = torch.logsumexp(torch.where(kept, s_top, torch.full_like(s_top, -math.inf)), dim=-1)
    log_q_rest = torch.log((-torch.expm1(s_mass.clamp(max=-1e-7))).clamp(min=1e-30))
    rest = torch.where(p_rest > 1e-12, p_rest * (torch.log(p_rest.clamp(min=1e-30)) - log_q_rest),
                       torch.zeros_like(p_rest))
    return top + rest


def kl_naive(teacher_logits: torch.Tensor, student_logits: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Reference, float64, one position at a time: the full-vocabulary KL(p ‖ q)
    (``k=None``), or the KL of both distributions coarsened to the teacher's
    top-k tokens plus one bucket for the rest."""
    out = []
    for t_row, s_row in zip(teacher_logits.double(), student_logits.double(), strict=True):
        p = torch.softmax(t_row, -1)
        q = torch.softmax(s_row, -1)
        if k is None:
            out.append(sum(float(pi) * math.log(float(pi) / float(qi)) for pi, qi in zip(p, q, strict=True)
                           if pi > 0))
            continue
        idx = torch.topk(p, k).indices.tolist()
        kl = sum(float(p[i]) * math.log(float(p[i]) / float(q[i])) for i in idx if p[i] > 0)
        p_rest, q_rest = 1.0 - float(p[idx].sum()), 1.0 - float(q[idx].sum())
        if p_rest > 0:
            kl += p_rest * math.log(p_rest / q_rest)
        out.append(kl)
    return torch.tensor(out, dtype=torch.float64)


# -- examples --------------------------------------------------------------------------------


@dataclass
class Example:
    """One training input: the student's prompt ids, the teacher's answer and its distribution."""

    source: str  # question | cloze | task | general | doc | raw
    prompt: str
    student_ids: list[int]
    answer_ids: list[int]
    topk_ids: torch.Tensor  # [len(answer_ids), k] int64
    topk_logp: torch.Tensor  # [len(answer_ids), k] float32
    answer: str = ""


def save_examples(folder: Path, examples: Sequence[Example]) -> None:
    """Write a round's examples (safetensors + JSON), whole or not at all."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    k = max((int(e.topk_ids.shape[1]) for e in examples), default=1)

    def padded(e: Example) -> tuple[torch.Tensor, torch.Tensor]:
        extra = k - int(e.topk_ids.shape[1])
        ids = F.pad(e.topk_ids, (0, extra), value=0)
        logp = F.pad(e.topk_logp, (0, extra), value=-math.inf)
        return ids, logp

    pads = [padded(e) for e in examples]
    tensors = {
        "student_ids": torch.tensor([t for e in examples for t in e.student_ids] or [0], dtype=torch.int64),
        "answer_ids": torch.tensor([t for e in examples for t in e.answer_ids] or [0], dtype=torch.int64),
        "topk_ids": torch.cat([p[0] for p in pads]) if pads else torch.zeros(1, k, dtype=torch.int64),
        "topk_logp": torch.cat([p[1] for p in pads]) if pads else torch.zeros(1, k),
    }
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp / "examples.safetensors"))
    index = [{"source": e.source, "prompt": e.prompt, "answer": e.answer, "student_len": len(e.student_ids),
              "answer_len": len(e.answer_ids)} for e in examples]
    atomic_write_text(tmp / "examples.json", json.dumps({"k": k, "examples": index}, ensure_ascii=False, indent=0))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_examples(folder: Path) -> list[Example]:
    from safetensors.torch import load_file

    try:
        index = json.loads((folder / "examples.json").read_text(encoding="utf-8"))
        t = load_file(str(folder / "examples.safetensors"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the training examples in {folder} cannot be read: {exc}",
                          hint="roll back the round (--rollback) and run it again") from exc
    out, s, a = [], 0, 0
    for row in index["examples"]:
        sl, al = row["student_len"], row["answer_len"]
        out.append(Example(row["source"], row["prompt"], t["student_ids"][s:s + sl].tolist(),
                           t["answer_ids"][a:a + al].tolist(), t["topk_ids"][a:a + al],
                           t["topk_logp"][a:a + al], row.get("answer", "")))
        s, a = s + sl, a + al
    return out


# -- the training inputs ---------------------------------------------------------------------

QUESTION_PROMPT = """\
Each fact is followed by a question that a new colleague could ask and that the fact answers.

Fact: The staging server listens on port 9443.
Question: Which port does the staging server listen on?

Fact: Invoices above 500 euros are approved by Karin Weiss.
Question: Who approves an invoice of 800 euros?

Fact: {fact}
Question:"""

GENERAL_PROMPT = """\
Questions people ask every day:
Question: How many legs does a spider have?
Question: What do bees make?
Question: Which planet is closest to the sun?
Question:"""


def _clean_question(text: str) -> str | None:
    q = " ".join(text.strip().split("\n")[0].split())
    if not q.endswith("?") or not 3 <= len(q.split()) <= 40:
        return None
    return q


def model_questions(hf: Any, prompt: str, n: int, cfg: DistillConfig, seed: int) -> list[str]:
    """Up to ``n`` distinct questions the model writes after ``prompt`` (the first
    greedy, the rest sampled; malformed ones dropped)."""
    out: list[str] = []
    for i in range(n):
        c = hf.complete(prompt, max_tokens=cfg.question_max_tokens, stop=["\n"],
                        temperature=0.0 if i == 0 else cfg.question_temperature, seed=seed + i)
        q = _clean_question(c.text)
        if q and q.lower() not in {x.lower() for x in out}:
            out.append(q)
    return out


def cloze_prompts(note: str, n: int) -> list[str]:
    """``n`` prompts that ask the model to finish the note from a cut point: the
    last words are what the note teaches, so the cuts are near the end."""
    words = note.split()
    if n <= 0 or len(words) < 4:
        return []
    out = []
    for j in range(1, n + 1):
        cut = max(2, len(words) - j)
        prefix = " ".join(words[:cut]).rstrip(",;:")
        out.append(f"Complete the sentence: {prefix} …")
    return list(dict.fromkeys(out))


@dataclass
class Source:
    """Something to consolidate: a note or a documentation page."""

    kind: str  # note | doc
    key: str  # note id, or the doc's path
    text: str
    context: str = ""  # extra teacher context (a doc page, as a session's prefetch shows it)


def make_prompts(hf: Any, sources: Sequence[Source], recorded: Sequence[str], cfg: DistillConfig,
                 progress: Progress | None = None) -> list[tuple[str, str, str]]:
    """(source kind, prompt, extra teacher context) of every training input."""
    out: list[tuple[str, str, str]] = []
    total = len(sources) + 1
    for i, src in enumerate(sources):
        fact = " ".join(src.text.split())[:600]
        seed = _seed(cfg.seed, "questions", src.kind, src.key)
        kind = "doc" if src.kind == "doc" else "question"
        for q in model_questions(hf, QUESTION_PROMPT.format(fact=fact), cfg.questions_per_note, cfg, seed):
            out.append((kind, f"Question: {q}", src.context))
        if src.kind == "note":
            out += [("cloze", p, "") for p in cloze_prompts(src.text, cfg.cloze_per_note)]
        if progress:
            progress("prompts", i + 1, total)
    for p in list(dict.fromkeys(recorded))[: cfg.recorded_tasks]:
        out.append(("task", p, ""))
    general = model_questions(hf, GENERAL_PROMPT, cfg.general_prompts, dataclasses.replace(
        cfg, question_temperature=max(cfg.question_temperature, 1.0)), _seed(cfg.seed, "general"))
    out += [("general", f"Question: {q}", "") for q in general]
    if progress:
        progress("prompts", total, total)
    seen: set[tuple[str, str]] = set()
    unique = []
    for kind, prompt, ctx in out:
        if (prompt, ctx) not in seen:
            seen.add((prompt, ctx))
            unique.append((kind, prompt, ctx))
    return unique


def _ids(hf: Any, text: str) -> list[int]:
    return [int(t) for t in hf.encode(text)[0].tolist()]


def _answer_end(tokenizer: Any, ids: list[int], eos: set[int]) -> int:
    """Length of the teacher's answer: through the token that ends its first
    non-empty line (that token included, so the student learns to stop)."""
    for j in range(1, len(ids) + 1):
        if ids[j - 1] in eos:
            return j
        text = tokenizer.decode(ids[:j], skip_special_tokens=True).lstrip()
        if "\n" in text:
            return j
    return len(ids)


def _eos_ids(hf: Any) -> set[int]:
    eos = getattr(hf.model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = hf.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


@torch.no_grad()
def teacher_examples(hf: Any, prompts: Sequence[tuple[str, str, str]], notes_block: str, cfg: DistillConfig,
                     progress: Progress | None = None) -> list[Example]:
    """The teacher — the base model with the notes in context — answers each
    prompt greedily; its top-k next-token distribution at every answer position
    is kept. The student's prompt is the same task without the notes."""
    model, tok = hf.model, hf.tokenizer
    eos = _eos_ids(hf)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (min(eos) if eos else 0)
    out = []
    for i, (kind, prompt, extra) in enumerate(prompts):
        context = "\n".join(x for x in (extra, notes_block) if x)
        t_ids = hf.encode(assemble_prompt(context, [], task_text(prompt))).to(hf.device)
        gen = model.generate(t_ids, attention_mask=torch.ones_like(t_ids), do_sample=False, top_p=None,
                             top_k=None, max_new_tokens=cfg.answer_max_tokens, pad_token_id=pad)
        answer = [int(t) for t in gen[0, t_ids.shape[1]:].tolist()]
        answer = answer[:_answer_end(tok, answer, eos)]
        if not answer or not tok.decode(answer, skip_special_tokens=True).strip():
            continue  # the teacher said nothing: nothing to learn
        # Only the answer's positions go through the LM head (its vocabulary is large):
        # the logits after the prompt's last token and after each answer token but the last.
        full = torch.cat([t_ids, torch.tensor([answer[:-1]], device=t_ids.device, dtype=t_ids.dtype)], dim=1)
        logits = model(input_ids=full, attention_mask=torch.ones_like(full), logits_to_keep=len(answer)).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        top = torch.topk(logp, min(cfg.top_k, logp.shape[-1]), dim=-1)
        out.append(Example(kind, prompt, _ids(hf, assemble_prompt("", [], task_text(prompt))), answer,
                           top.indices.cpu(), top.values.cpu(), tok.decode(answer, skip_special_tokens=True)))
        if progress:
            progress("teacher", i + 1, len(prompts))
    return out


def raw_examples(hf: Any, texts: Sequence[str]) -> list[Example]:
    """The baseline: the note text itself as the target after the bare BOS
    prompt; a one-hot teacher (k = 1, log p = 0) makes the KL the usual LM loss."""
    start = [int(t) for t in hf.encode("")[0].tolist()]
    if not start:  # a tokenizer that adds no BOS: the first target needs a token before it
        tok = hf.tokenizer
        start = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    newline = hf.tokenizer.encode("\n", add_special_tokens=False)
    out = []
    for text in texts:
        ids = hf.tokenizer.encode(text.strip(), add_special_tokens=False) + newline
        if not ids:
            continue
        t = torch.tensor(ids, dtype=torch.int64)[:, None]
        out.append(Example("raw", "", list(start), [int(x) for x in ids], t, torch.zeros(len(ids), 1),
                           text.strip()))
    return out


# -- batches and the training loop -----------------------------------------------------------


def batch_loss(model: Any, batch: Sequence[Example], pad_id: int, device: str) -> torch.Tensor:
    """Mean per-token KL over a batch. Sequences are left-padded so every answer
    ends at the last position, and positions count from each sequence's first
    real token, so a padded batch computes what each example alone would."""
    seqs = [e.student_ids + e.answer_ids[:-1] for e in batch]
    width = max(len(s) for s in seqs)
    keep = max(len(e.answer_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(batch), width), dtype=torch.int64)
    for b, s in enumerate(seqs):
        ids[b, width - len(s):] = torch.tensor(s)
        mask[b, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                   logits_to_keep=keep).logits  # [B, keep, V]
    rows, t_ids, t_logp = [], [], []
    k = max(int(e.topk_ids.shape[1]) for e in batch)
    for b, e in enumerate(batch):
        a = len(e.answer_ids)
        rows.append(logits[b, keep - a:])
        t_ids.append(F.pad(e.topk_ids, (0, k - e.topk_ids.shape[1]), value=0))
        t_logp.append(F.pad(e.topk_logp, (0, k - e.topk_logp.shape[1]), value=-math.inf))
    kl = topk_kl(torch.cat(rows), torch.cat(t_ids).to(device), torch.cat(t_logp).to(device))
    return kl.mean()


def schedule(n_new: int, n_old: int, cfg: DistillConfig) -> list[list[tuple[str, int]]]:
    """Every step's batch, fixed up front by the seed: ("new"|"old", index)
    pairs. Each epoch shuffles all new examples with up to ``replay × n_new``
    old ones drawn without replacement; resuming replays the same plan."""
    steps: list[list[tuple[str, int]]] = []
    for epoch in range(cfg.epochs):
        rng = random.Random(_seed(cfg.seed, "epoch", epoch))
        n_replay = min(n_old, math.ceil(cfg.replay * n_new))
        items = [("new", i) for i in range(n_new)] + [("old", j) for j in rng.sample(range(n_old), n_replay)]
        rng.shuffle(items)
        steps += [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    if cfg.max_steps is not None:
        steps = steps[: cfg.max_steps]
    return steps


class TrainingInterrupted(LifelongError):
    """A round stopped at a checkpoint (its time budget ran out); run it again to resume."""


# -- the round -------------------------------------------------------------------------------


@dataclass
class WeightsResult:
    """What one consolidation round did."""

    version: int | None  # the new current version (None: nothing was trained)
    path: Path | None
    notes: list[int] = field(default_factory=list)  # consolidated this round
    retired: list[int] = field(default_factory=list)
    examples: int = 0
    replayed: int = 0  # earlier rounds' examples available for replay
    sources: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    resumed_from: int = 0  # the step a resumed round restarted at (0: fresh)
    loss_first: float | None = None
    loss_last: float | None = None
    data_seconds: float = 0.0
    train_seconds: float = 0.0
    adapter_bytes: int = 0
    message: str = ""


def consolidate_into_weights(
    hf: Any,
    notes: Notes,
    *,
    store: AdapterStore | None = None,
    config: DistillConfig | None = None,
    docs: Any | None = None,
    recorded: Sequence[str] = (),
    retire: bool = False,
    rollback: bool = False,
    progress: Progress | None = None,
) -> WeightsResult:
    """Train the namespace's new notes (those no earlier round holds) into its adapter.

    ``hf`` is the base model on the transformers backend (``load_llm("hf:local")``);
    ``recorded`` are task prompts the namespace has worked on
    (:func:`lifelong.context.session.recorded_task_prompts`); ``docs`` adds the
    first page of each documentation file. ``retire`` soft-deletes the
    consolidated notes once the adapter is current. An unfinished earlier round
    is resumed, or discarded first with ``rollback=True``.
    """
    cfg = config or DistillConfig()
    store = store or AdapterStore(notes.namespace)
    if getattr(hf, "adapter", None) is not None or not hasattr(hf, "encode"):
        raise ConfigError("consolidation trains on the base model of the transformers backend",
                          hint="load it as hf:local (or hf:PATH) without ?adapter=")
    if rollback:
        shutil.rmtree(store.work_dir, ignore_errors=True)
    current = store.current()
    chain = store.chain(current)
    held = {int(n["id"]): n["text"] for v in chain for n in v.meta.get("notes", [])}
    held_docs = {d["path"]: d["sha"] for v in chain for d in v.meta.get("docs", [])}
    active = notes.list("active")
    if not active and not held:
        raise ValidationError(f"namespace {notes.namespace!r} has no notes to consolidate",
                              hint="notes are written by `lifelong run` sessions or `lifelong notes add`")
    new_notes = [n for n in active if n.id not in held]
    sources = [Source("note", str(n.id), n.text) for n in new_notes]
    new_docs = []
    if docs is not None:
        for info in docs.tree():
            page = docs.read(info.path, 0, 256).text.strip()
            sha = hashlib.sha256(page.encode()).hexdigest()[:16]
            if page and held_docs.get(info.path) != sha:
                new_docs.append({"path": info.path, "sha": sha})
                sources.append(Source("doc", info.path, page, f"## From {info.path}\n{page}\n"))
    if not sources:
        holder = {int(n["id"]): v.version for v in chain for n in v.meta.get("notes", [])}
        retired = _retire(notes, [n for n in active if n.id in held], holder) if retire else []
        return WeightsResult(None if current is None else current.version,
                             None if current is None else current.path, retired=retired,
                             message="nothing new to consolidate: every active note is in the adapter already"
                             + (f"; retired {len(retired)} of them" if retired else ""))

    block = _teacher_block(active, held, cfg)
    plan = {
        "namespace": notes.namespace, "parent": None if current is None else current.version,
        "notes": [{"id": n.id, "text": n.text} for n in new_notes], "docs": new_docs,
        "teacher_block": hashlib.sha256(block.encode()).hexdigest()[:16],
        "recorded": hashlib.sha256("\n\x00".join(recorded).encode()).hexdigest()[:16],
        "base": {"name": str(getattr(hf, "name", "")), "fingerprint": base_fingerprint(hf.model.config)},
        # what the round computes. Budgets may change on resume: a step budget
        # only cuts the same fixed schedule shorter or longer.
        "config": _jsonable({k: v for k, v in dataclasses.asdict(cfg).items()
                             if k not in ("max_seconds", "max_steps", "checkpoint_every")}),
    }
    plan_sha = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    _check_work(store, plan_sha, current)
    _check_fits(hf, block, sources, recorded, cfg)

    work = store.work_dir
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "plan.json", json.dumps({**plan, "sha": plan_sha}, indent=1, sort_keys=True))
    result = WeightsResult(None, None, notes=[n.id for n in new_notes])

    # 1. the data: made once, written whole; a resumed round reads it back
    t0 = time.perf_counter()
    if not (work / "data" / "examples.json").is_file():
        if cfg.objective == "raw":
            examples = raw_examples(hf, [s.text for s in sources])
        else:
            prompts = make_prompts(hf, sources, recorded, cfg, progress)
            examples = teacher_examples(hf, prompts, block, cfg, progress)
        if not examples:
            raise ValidationError("the teacher produced no usable answer for any training prompt",
                                  hint="check that the model answers with the notes in context")
        save_examples(work / "data", examples)
    examples = load_examples(work / "data")
    result.data_seconds = time.perf_counter() - t0
    old = [e for v in chain if (v.path / "data").is_dir() for e in load_examples(v.path / "data")]
    result.examples, result.replayed = len(examples), len(old)
    for e in examples:
        result.sources[e.source] = result.sources.get(e.source, 0) + 1

    # 2. the budget: a step budget must cover one pass over the new examples
    plan_steps = schedule(len(examples), len(old), cfg)
    one_epoch = math.ceil(len(examples) / cfg.batch_size)
    if cfg.max_steps is not None and cfg.max_steps < one_epoch:
        raise ConfigError(f"a budget of {cfg.max_steps} steps cannot cover the {len(examples)} new examples "
                          f"once ({one_epoch} steps of {cfg.batch_size})",
                          hint=f"allow at least {one_epoch} steps, or consolidate fewer notes per round")

    # 3. training, from a checkpoint when there is one
    model, optimizer, start = _student(hf, current, work, cfg)
    result.resumed_from = start
    pad = hf.tokenizer.pad_token_id if hf.tokenizer.pad_token_id is not None else 0
    t0 = time.perf_counter()
    try:
        model.train()
        for step in range(start, len(plan_steps)):
            batch = [examples[i] if which == "new" else old[i] for which, i in plan_steps[step]]
            loss = batch_loss(model, batch, pad, hf.device)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            result.loss_first = value if result.loss_first is None else result.loss_first
            result.loss_last = value
            done = step + 1
            if progress:
                progress("train", done, len(plan_steps))
            out_of_time = cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds
            if done < len(plan_steps) and (done % cfg.checkpoint_every == 0 or out_of_time):
                _save_checkpoint(model, optimizer, done, work)
            if out_of_time and done < len(plan_steps):
                raise TrainingInterrupted(
                    f"the time budget ({cfg.max_seconds:g} s) ran out at step {done} of {len(plan_steps)}; "
                    "the round is saved and the previous adapter is still current",
                    hint="run the same command again to resume, or pass --rollback to discard the round")
        result.steps = len(plan_steps)
        result.train_seconds = time.perf_counter() - t0
        model.eval()
        final = work / "final"
        shutil.rmtree(final, ignore_errors=True)
        model.save_pretrained(str(final), safe_serialization=True)
    finally:
        _release(hf, model)
    _portable_config(final, hf)
    shutil.copytree(work / "data", final / "data")

    # 4. publish: the new version becomes current only now, whole
    meta = {**{k: plan[k] for k in ("parent", "notes", "docs", "base")}, "plan": plan_sha,
            "retired": [n.id for n in new_notes] if retire else [],
            "objective": cfg.objective, "examples": len(examples), "replayed": len(old), "sources": result.sources,
            "steps": result.steps, "loss_first": result.loss_first, "loss_last": result.loss_last,
            "train_seconds": round(result.train_seconds, 3), "data_seconds": round(result.data_seconds, 3),
            "created": time.time(), "config": plan["config"]}
    version = store.publish(final, meta)
    shutil.rmtree(work, ignore_errors=True)
    result.version, result.path, result.adapter_bytes = version.version, version.path, version.size_bytes()
    if retire:
        result.retired = _retire(notes, new_notes, {n.id: version.version for n in new_notes})
    result.message = (f"adapter v{version.version}: {len(new_notes)} notes"
                      + (f", {len(new_docs)} docs" if new_docs else "")
                      + f", {len(examples)} examples (+{len(old)} to replay), {result.steps} steps")
    return result


def use_version(notes: Notes, store: AdapterStore, version: int | None) -> list[int]:
    """Make ``version`` current (``None``: no adapter) and restore the notes that
    the versions leaving the chain had retired; returns the restored ids."""
    target = store.get(version) if version is not None else None
    keep = {v.version for v in store.chain(target)}
    leaving = [v for v in store.chain(store.current()) if v.version not in keep]
    restored = []
    for v in leaving:
        reason = RETIRE_REASON.format(version=v.version)
        for nid in (int(n["id"]) for n in v.meta.get("notes", [])):
            try:
                note = notes.get(nid)
            except NotFoundError:
                continue  # purged since: nothing to restore
            last = notes.history(nid)[-1]
            if note.status == "deleted" and last.kind == "delete" and last.new_text == reason:
                notes.restore(nid, session="consolidation", task="use-adapter-version")
                restored.append(nid)
    store.set_current(version)
    return restored


# -- internals -------------------------------------------------------------------------------


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") >> 1


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=list))


def _teacher_block(active: Sequence[Any], held: dict[int, str], cfg: DistillConfig) -> str:
    """The notes the teacher reads: the active block, plus (``all``) the notes of
    earlier rounds that have been retired since, in the block's own order."""
    rows = {n.id: n.text for n in active}
    if cfg.teacher_notes == "all":
        rows = {**held, **rows}
    return render_notes(sorted(rows.items()))


def _check_fits(hf: Any, block: str, sources: Sequence[Source], recorded: Sequence[str],
                cfg: DistillConfig) -> None:
    """The teacher must read every note and still have room for a prompt and
    its answer: otherwise the budget cannot be met, and nothing is started."""
    block_tokens = hf.count_tokens(block)
    extra = max((hf.count_tokens(s.context) for s in sources), default=0)
    longest = max([hf.count_tokens(task_text(p)) for p in recorded[: cfg.recorded_tasks]] + [64])
    need = block_tokens + extra + longest + cfg.answer_max_tokens + 16
    if need > hf.context_window:
        raise ConfigError(
            f"the teacher's context would need {need} tokens (notes {block_tokens}, longest task {longest}, "
            f"answer {cfg.answer_max_tokens}); the model's window is {hf.context_window}",
            hint="retire consolidated notes first, let the teacher read only the active notes "
            "(teacher_notes='active'), or shorten the notes")


def _check_work(store: AdapterStore, plan_sha: str, current: AdapterVersion | None) -> None:
    """An unfinished round in .work is resumed only if it is this very round."""
    plan_file = store.work_dir / "plan.json"
    if not store.work_dir.exists():
        return
    try:
        old = json.loads(plan_file.read_text(encoding="utf-8")).get("sha")
    except (OSError, ValueError):
        old = None
    if old is None:
        shutil.rmtree(store.work_dir)  # no plan was written: nothing in it can be trusted
        return
    if old == plan_sha:
        return  # the same round: resume it
    if current is not None and current.meta.get("plan") == old:
        shutil.rmtree(store.work_dir)  # a round that was published; only its leftovers remained
        return
    raise ConfigError(
        f"an unfinished consolidation round of {store.namespace!r} was started with other notes or settings",
        hint="run with --rollback to discard it (the current adapter stays as it is), "
        "or run again with the settings it was started with")


def _student(hf: Any, current: AdapterVersion | None, work: Path, cfg: DistillConfig) -> tuple[Any, Any, int]:
    """The student: the base model with a trainable LoRA adapter — from the
    round's checkpoint, else the current version, else fresh (B = 0)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    ckpt = work / "checkpoint"
    start = 0
    torch.manual_seed(_seed(cfg.seed, "lora-init"))
    if (ckpt / "state.json").is_file():
        model = PeftModel.from_pretrained(hf.model, str(ckpt), is_trainable=True)
        start = int(json.loads((ckpt / "state.json").read_text())["step"])
    elif current is not None:
        model = PeftModel.from_pretrained(hf.model, str(current.path), is_trainable=True)
    else:
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(hf.model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    if start:
        optimizer.load_state_dict(_load_optimizer(ckpt))
    return model, optimizer, start


def _save_optimizer(folder: Path, optimizer: Any) -> None:
    """The optimizer state as safetensors + JSON (the house's no-pickle trainer format)."""
    from safetensors.torch import save

    from lifelong.train.checkpoint import encode_state

    tensors: dict[str, torch.Tensor] = {}
    tree = encode_state(optimizer.state_dict(), tensors)
    (folder / "optimizer.safetensors").write_bytes(save(tensors))
    atomic_write_text(folder / "optimizer.json", json.dumps(tree))


def _load_optimizer(folder: Path) -> Any:
    from safetensors.torch import load

    from lifelong.train.checkpoint import decode_state

    try:
        tensors = load((folder / "optimizer.safetensors").read_bytes())
        return decode_state(json.loads((folder / "optimizer.json").read_text(encoding="utf-8")), tensors)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"the checkpoint in {folder} is damaged: {exc}",
                          hint="discard the unfinished round with --rollback") from exc


def _save_checkpoint(model: Any, optimizer: Any, step: int, work: Path) -> None:
    """Adapter, optimizer state, then the step; swapped in whole."""
    tmp = work / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    _save_optimizer(tmp, optimizer)
    atomic_write_text(tmp / "state.json", json.dumps({"step": step}))
    old = work / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if (work / "checkpoint").exists():
        os.replace(work / "checkpoint", old)
    os.replace(tmp, work / "checkpoint")
    shutil.rmtree(old, ignore_errors=True)


def _release(hf: Any, model: Any) -> None:
    """Take the LoRA layers out of the shared base model again (not merged)."""
    base = model.unload() if hasattr(model, "unload") else model
    hf.model = base.eval()


def _portable_config(folder: Path, hf: Any) -> None:
    """Name the base model by its spec, not by a cache path on this machine (and
    drop the model card peft writes, which names that path too)."""
    (folder / "README.md").unlink(missing_ok=True)
    f = folder / "adapter_config.json"
    cfg = json.loads(f.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(getattr(hf, "spec_target", "") or getattr(hf, "name", ""))
    atomic_write_text(f, json.dumps(cfg, indent=2, sort_keys=True))


def _retire(notes: Notes, rows: Sequence[Any], holder: dict[int, int]) -> list[int]:
    """Soft-delete consolidated notes, each with a reason naming the version that holds it."""
    out = []
    for n in rows:
        notes.delete(n.id, reason=RETIRE_REASON.format(version=holder[n.id]), session="consolidation",
                     task="into-weights")
        out.append(n.id)
    return out

