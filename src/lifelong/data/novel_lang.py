"""Continual translation of a novel language: synthetic languages, their material, chrF.

Nested Learning (Behrouz et al., 2025, "continual translation of a novel
language") teaches a model a language it has never seen, in context, then a
second one, and asks whether the first is still there. The languages here are
generated from a seed, offline:

- a **lexicon**: English nouns, transitive verbs and adjectives mapped to
  made-up words built from the language's own syllables (each language has its
  own consonants and vowels, so A and B never share a word);
- a **word-order rule**: one of SOV, VSO, VOS, OSV, OVS (never English's SVO),
  and adjectives before or after their noun;
- **morphology**: a plural suffix on nouns, a past-tense suffix on verbs, an
  object (accusative) suffix after the plural one; no articles;
- optionally an **enciphered script** (``script="cipher"``): every Latin letter of
  the language is written with a fixed Greek or Cyrillic letter, as in the
  encrypted-Manchu control of the language papers, so no word looks like a
  Latin-script word the model may know.

A language's **material** (what a learner is given) is a dictionary (each word
with its English forms), grammar notes, and parallel sentences. The **test**
is translation into English of sentences that are not among the parallel ones,
scored with chrF (Popović, 2015) through ``sacrebleu`` on lower-cased text.

Every test sentence is translatable from the material alone: ``solve`` reads
only the material's text (the dictionary lines and the grammar notes) and
translates each test sentence to its reference exactly (tests check this for
many seeds), the independent solver the long-context suites have too.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from lifelong.data.base import ContinualTask, Query
from lifelong.errors import ConfigError

NAME = "novel_translation"

# English forms: noun (singular, plural); verb (base, 3rd singular, past); adjective.
NOUNS: tuple[tuple[str, str], ...] = (
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("fish", "fish"), ("horse", "horses"),
    ("child", "children"), ("woman", "women"), ("man", "men"), ("farmer", "farmers"),
    ("king", "kings"), ("teacher", "teachers"), ("soldier", "soldiers"), ("sailor", "sailors"),
    ("wolf", "wolves"), ("goat", "goats"), ("baker", "bakers"), ("queen", "queens"),
    ("fox", "foxes"), ("boy", "boys"), ("girl", "girls"), ("doctor", "doctors"),
    ("hunter", "hunters"), ("mouse", "mice"), ("sheep", "sheep"),
)
VERBS: tuple[tuple[str, str, str], ...] = (
    ("see", "sees", "saw"), ("follow", "follows", "followed"), ("help", "helps", "helped"),
    ("find", "finds", "found"), ("call", "calls", "called"), ("push", "pushes", "pushed"),
    ("watch", "watches", "watched"), ("catch", "catches", "caught"), ("love", "loves", "loved"),
    ("feed", "feeds", "fed"), ("chase", "chases", "chased"), ("teach", "teaches", "taught"),
    ("hear", "hears", "heard"), ("carry", "carries", "carried"),
)
ADJECTIVES: tuple[str, ...] = (
    "big", "small", "old", "young", "happy", "angry", "tired", "quiet", "brave", "clever",
    "hungry", "lazy",
)
ORDERS = ("SOV", "VSO", "VOS", "OSV", "OVS")
ORDER_WORDS = {"S": "subject", "O": "object", "V": "verb"}

# Two phonologies, so two languages of one stream never share a word (A takes the
# first, B the second; a stream of more languages cycles with different seeds).
PHONOLOGIES: tuple[tuple[str, str], ...] = (("bdgkmnt", "aiou"), ("fhlprsvz", "eiy"))

# The enciphered script: each Latin letter of the languages -> one Greek/Cyrillic letter.
_CIPHER_SOURCE = "abdefghiklmnoprstuvyz"
_CIPHER_TARGET = "αβδεφγηιкλμνοπρσтυвψζ"


@dataclass
class LanguageConfig:
    """The size of one language and its test (the defaults are the measured sizes)."""

    nouns: int = 10
    verbs: int = 5
    adjectives: int = 4
    parallel: int = 8  # parallel sentences in the material
    test: int = 8  # test sentences (never among the parallel ones)
    script: str = "latin"  # "latin" | "cipher"
    max_tokens: int = 24  # generation budget of one translation

    def __post_init__(self) -> None:
        for name, hi in (("nouns", len(NOUNS)), ("verbs", len(VERBS)), ("adjectives", len(ADJECTIVES))):
            v = getattr(self, name)
            if not isinstance(v, int) or not 2 <= v <= hi:
                raise ConfigError(f"{name} must be a whole number in [2, {hi}], got {v!r}")
        for name in ("parallel", "test"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= 200:
                raise ConfigError(f"{name} must be a whole number in [1, 200], got {v!r}")
        if self.script not in ("latin", "cipher"):
            raise ConfigError(f"unknown script {self.script!r}", hint="use 'latin' or 'cipher'")


@dataclass
class Language:
    """One generated language: its name, lexicon and grammar."""

    name: str
    nouns: dict[str, str]  # English singular -> word
    verbs: dict[str, str]  # English base -> word
    adjectives: dict[str, str]  # English -> word
    order: str  # e.g. "SOV"
    adjective_after: bool
    plural: str  # suffixes (without the hyphen)
    past: str
    object_case: str
    cipher: dict[str, str] = field(default_factory=dict)

    def write(self, text: str) -> str:
        return "".join(self.cipher.get(c, c) for c in text) if self.cipher else text


@dataclass
class Sentence:
    """One sentence's meaning: (adjective | None, noun, plural) for subject and object."""

    subject: tuple[str | None, str, bool]
    verb: str
    past: bool
    obj: tuple[str | None, str, bool]


def _word(rng: random.Random, consonants: str, vowels: str, used: set[str]) -> str:
    while True:
        n = rng.choice((2, 2, 3))
        w = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n))
        if rng.random() < 0.3:
            w += rng.choice(consonants)
        if w not in used:
            used.add(w)
            return w


def make_language(seed: int | str, index: int = 0, cfg: LanguageConfig | None = None) -> Language:
    """Language number ``index`` of the stream with this seed."""
    cfg = cfg or LanguageConfig()
    rng = random.Random(f"{NAME}:{seed}:{index}")
    consonants, vowels = PHONOLOGIES[index % len(PHONOLOGIES)]
    used: set[str] = set()
    name = _word(rng, consonants, vowels, used).capitalize() + "ish"
    nouns = rng.sample([n for n, _ in NOUNS], cfg.nouns)
    verbs = rng.sample([v for v, _, _ in VERBS], cfg.verbs)
    adjs = rng.sample(list(ADJECTIVES), cfg.adjectives)
    lang = Language(
        name=name,
        nouns={n: _word(rng, consonants, vowels, used) for n in nouns},
        verbs={v: _word(rng, consonants, vowels, used) for v in verbs},
        adjectives={a: _word(rng, consonants, vowels, used) for a in adjs},
        order=rng.choice(ORDERS),
        adjective_after=rng.random() < 0.5,
        plural=rng.choice(consonants) + rng.choice(vowels) + rng.choice(consonants),
        past=rng.choice(consonants) + rng.choice(vowels),
        object_case=rng.choice(vowels) + rng.choice(consonants),
    )
    # Suffixes must not be confusable: distinct, and no one a suffix of another.
    sufs = [lang.plural, lang.past, lang.object_case]
    if len(set(sufs)) < 3 or any(a != b and a.endswith(b) for a in sufs for b in sufs):
        return make_language(f"{seed}+", index, cfg)
    if cfg.script == "cipher":
        lang.cipher = dict(zip(_CIPHER_SOURCE, _CIPHER_TARGET))
        lang.name = lang.write(lang.name.lower()).capitalize()
    return lang


# --------------------------------------------------------------------------- rendering


def _noun_phrase_target(lang: Language, np: tuple[str | None, str, bool], is_object: bool) -> str:
    adj, noun, plural = np
    word = lang.nouns[noun] + (lang.plural if plural else "") + (lang.object_case if is_object else "")
    if adj is None:
        return word
    a = lang.adjectives[adj]
    return f"{word} {a}" if lang.adjective_after else f"{a} {word}"


def to_language(lang: Language, s: Sentence) -> str:
    parts = {
        "S": _noun_phrase_target(lang, s.subject, False),
        "O": _noun_phrase_target(lang, s.obj, True),
        "V": lang.verbs[s.verb] + (lang.past if s.past else ""),
    }
    return lang.write(" ".join(parts[c] for c in lang.order))


_NOUN_FORMS = {sg: pl for sg, pl in NOUNS}
_VERB_FORMS = {b: (s3, past) for b, s3, past in VERBS}


def _noun_phrase_english(np: tuple[str | None, str, bool]) -> str:
    adj, noun, plural = np
    n = _NOUN_FORMS[noun] if plural else noun
    return f"the {adj} {n}" if adj else f"the {n}"


def to_english(s: Sentence) -> str:
    s3, past = _VERB_FORMS[s.verb]
    verb = past if s.past else (s.verb if s.subject[2] else s3)
    return f"{_noun_phrase_english(s.subject)} {verb} {_noun_phrase_english(s.obj)}."


def random_sentence(rng: random.Random, lang: Language) -> Sentence:
    def np() -> tuple[str | None, str, bool]:
        adj = rng.choice(sorted(lang.adjectives)) if rng.random() < 0.5 else None
        return adj, rng.choice(sorted(lang.nouns)), rng.random() < 0.4

    subj = np()
    obj = np()
    while obj[1] == subj[1]:
        obj = np()
    return Sentence(subj, rng.choice(sorted(lang.verbs)), rng.random() < 0.5, obj)


def dictionary_text(lang: Language) -> str:
    lines = [f"Dictionary of {lang.name} (word = English):"]
    for en, w in sorted(lang.nouns.items(), key=lambda kv: kv[1]):
        lines.append(f"{lang.write(w)} = {en} (plural: {_NOUN_FORMS[en]}) [noun]")
    for en, w in sorted(lang.verbs.items(), key=lambda kv: kv[1]):
        s3, past = _VERB_FORMS[en]
        lines.append(f"{lang.write(w)} = {en} (he {s3}; past: {past}) [verb]")
    for en, w in sorted(lang.adjectives.items(), key=lambda kv: kv[1]):
        lines.append(f"{lang.write(w)} = {en} [adjective]")
    return "\n".join(lines)


def grammar_text(lang: Language) -> str:
    order = ", ".join(ORDER_WORDS[c] for c in lang.order)
    adj = "after" if lang.adjective_after else "before"
    return "\n".join([
        f"Grammar of {lang.name}:",
        f"- Word order: {order} ({lang.order}).",
        f"- Adjectives come {adj} their noun.",
        f"- Plural nouns end in -{lang.write(lang.plural)}.",
        f"- Verbs in the past tense end in -{lang.write(lang.past)}; verbs without it are present tense.",
        f"- The object noun ends in -{lang.write(lang.object_case)}, after any plural ending.",
        f"- {lang.name} has no articles; English uses 'the' before every noun.",
    ])


def query_prompt(lang: Language, sentence: str) -> str:
    """The line a translation is asked with (the parallel sentences use the same form)."""
    return f"Translate from {lang.name} into English.\n{lang.name}: {sentence}\nEnglish:"


def material_text(lang: Language, parallel: list[tuple[str, str]]) -> str:
    examples = [f"Examples of {lang.name} with their English translations:"]
    for src, ref in parallel:
        examples.append(f"{lang.name}: {src}\nEnglish: {ref}")
    return "\n\n".join([dictionary_text(lang), grammar_text(lang), "\n".join(examples)])


def build_tasks(seed: int, languages: int = 2, cfg: LanguageConfig | None = None) -> list[ContinualTask]:
    """The stream: language 0, then language 1, … (each a ``ContinualTask``)."""
    cfg = cfg or LanguageConfig()
    if not isinstance(languages, int) or not 1 <= languages <= 8:
        raise ConfigError(f"languages must be a whole number in [1, 8], got {languages!r}")
    tasks = []
    for i in range(languages):
        lang = make_language(seed, i, cfg)
        rng = random.Random(f"{NAME}:{seed}:{i}:sentences")
        seen: set[str] = set()
        pairs: list[tuple[str, str]] = []
        tries = 0
        while len(pairs) < cfg.parallel + cfg.test:
            tries += 1
            if tries > 100 * (cfg.parallel + cfg.test):
                raise ConfigError("the language is too small for that many distinct sentences",
                                  hint="use more nouns/verbs or fewer sentences")
            s = random_sentence(rng, lang)
            src = to_language(lang, s)
            if src in seen:
                continue
            seen.add(src)
            pairs.append((src, to_english(s)))
        parallel, test = pairs[: cfg.parallel], pairs[cfg.parallel:]
        tasks.append(ContinualTask(
            name=f"lang{i}-{lang.name}",
            material=material_text(lang, parallel),
            queries=[Query(query_prompt(lang, src), ref, cfg.max_tokens, {"source": src}) for src, ref in test],
            practice=[Query(query_prompt(lang, src), ref, cfg.max_tokens, {"source": src})
                      for src, ref in parallel],
            metric="chrF",
            score=chrf,
            meta={"language": lang.name, "order": lang.order, "adjective_after": lang.adjective_after,
                  "script": cfg.script},
        ))
    return tasks


# --------------------------------------------------------------------------- scoring


def clean_translation(output: str) -> str:
    """The first non-empty line, lower-cased, spaces collapsed (what chrF is computed on)."""
    for line in (output or "").splitlines():
        line = " ".join(line.split()).lower()
        if line:
            return line
    return ""


def chrf(outputs: list[str], references: list[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100, on lower-cased
    first lines of the outputs."""
    try:
        import sacrebleu
    except ImportError:
        raise ConfigError("chrF needs sacrebleu", hint="pip install 'lifelong[continual]'") from None

    if len(outputs) != len(references):
        raise ConfigError(f"{len(outputs)} outputs for {len(references)} references")
    if not outputs:
        return 0.0
    hyps = [clean_translation(o) for o in outputs]
    refs = [" ".join(r.split()).lower() for r in references]
    return float(sacrebleu.corpus_chrf(hyps, [refs]).score)


# --------------------------------------------------------------------------- the solver


def solve(material: str, sentence: str) -> str:
    """Translate ``sentence`` into English from the material's text alone.

    An independent check of the generator: it parses the dictionary lines and the
    grammar notes (nothing of the generator's internal state) and applies them.
    Raises ``ValueError`` when the material does not determine a translation.
    """
    entries: dict[str, tuple[str, tuple[str, ...]]] = {}
    for m in re.finditer(r"^(\S+) = (\w+) \((?:plural: (\w+)|he (\w+); past: (\w+))\) \[(noun|verb)\]$",
                         material, re.M):
        word, en, pl, s3, past, kind = m.groups()
        entries[word] = (kind, (en, pl) if kind == "noun" else (en, s3, past))
    for m in re.finditer(r"^(\S+) = (\w+) \[adjective\]$", material, re.M):
        entries[m.group(1)] = ("adjective", (m.group(2),))

    def rule(pattern: str) -> str:
        m = re.search(pattern, material, re.M)
        if not m:
            raise ValueError(f"the grammar does not say {pattern!r}")
        return m.group(1)

    order = rule(r"^- Word order: .*\((\w{3})\)\.$")
    adj_after = rule(r"^- Adjectives come (after|before) their noun\.$") == "after"
    plural = rule(r"^- Plural nouns end in -(\S+)\.$")
    past = rule(r"^- Verbs in the past tense end in -(\S+);")
    obj_case = rule(r"^- The object noun ends in -(\S+), after")

    def lookup(token: str, kind: str, suffixes: list[str]) -> tuple[tuple[str, ...], list[str]]:
        """The entry of a word that is ``token`` with some of ``suffixes`` (in order) removed."""
        for mask in range(1 << len(suffixes)):
            stem, used = token, []
            ok = True
            for k in reversed(range(len(suffixes))):
                if mask >> k & 1:
                    if not stem.endswith(suffixes[k]):
                        ok = False
                        break
                    stem, used = stem[: -len(suffixes[k])], [suffixes[k], *used]
            if ok and stem in entries and entries[stem][0] == kind:
                return entries[stem][1], used
        raise ValueError(f"no {kind} in the dictionary for {token!r}")

    tokens = sentence.split()
    # Split the tokens into the three constituents: a noun phrase is a noun, with an
    # adjective on the side the grammar says; the verb is one word.
    groups: dict[str, list[str]] = {}
    pos = 0
    for c in order:
        if c == "V":
            groups[c], pos = tokens[pos: pos + 1], pos + 1
            continue
        take = 1
        for width in (2, 1):
            chunk = tokens[pos: pos + width]
            if len(chunk) < width:
                continue
            adj_tok = chunk[-1] if adj_after else chunk[0]
            if width == 2 and entries.get(adj_tok, ("",))[0] == "adjective":
                take = 2
                break
        groups[c], pos = tokens[pos: pos + take], pos + take
    if pos != len(tokens):
        raise ValueError(f"cannot parse {sentence!r}")

    def noun_phrase(group: list[str], is_object: bool) -> tuple[str, bool]:
        adj = None
        if len(group) == 2:
            adj_tok, noun_tok = (group[1], group[0]) if adj_after else (group[0], group[1])
            adj = entries[adj_tok][1][0]
        else:
            noun_tok = group[0]
        forms, used = lookup(noun_tok, "noun", [plural, obj_case])
        if (obj_case in used) != is_object:
            raise ValueError(f"object marking of {noun_tok!r} does not fit the word order")
        is_plural = plural in used
        noun = forms[1] if is_plural else forms[0]
        return (f"the {adj} {noun}" if adj else f"the {noun}"), is_plural

    subj, subj_plural = noun_phrase(groups["S"], False)
    obj, _ = noun_phrase(groups["O"], True)
    vforms, vused = lookup(groups["V"][0], "verb", [past])
    verb = vforms[2] if vused else (vforms[0] if subj_plural else vforms[1])
    return f"{subj} {verb} {obj}."
