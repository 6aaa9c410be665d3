"""What a memory write may claim: the checks that keep notes true.

A small model writing its own memory makes two kinds of mistakes that a
person would never let through, and both cost trust at once:

- it copies the **worked example** of its prompt as if it were a fact
  ("The new member joins port 9443." after an example about a server on
  port 9443);
- it **invents** specifics the session never showed (a code word, a number);
- when it rewrites the notes smaller, it **drops** a fact, or replaces a
  note by a copy of another one.

The checks here are deliberately simple and explainable. A note's
*key terms* are the words that carry its facts: numbers and words with
digits, names (capitalised words that do not merely open a sentence),
acronyms, and identifiers with inner punctuation (``report-WEEK.pdf``,
``scripts/deploy.sh``). Its *content words* are the rest minus stop words.

- :func:`ungrounded` — key terms of a note that appear nowhere in what the
  session saw (task, answer, feedback, tool results, notes);
- :func:`leaked` — words a note shares with the prompt's example but not
  with the session: the example was copied;
- :func:`lost_facts` — what of an old note a rewrite no longer states.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Words too common to carry a fact (and the auxiliaries notes are built from).
STOP_WORDS = frozenset("""
a about above after again against all also always am an and any are as at be because been
before being below between both but by can could did do does doing done down during each
else even every few for from further had has have having he her here hers him his how i if
in into is it its itself just least less let like made make many may me might more most must
my never new no nor not now of off on once one only or other our out over own same she should
so some such than that the their them then there these they this those through to too under
until up upon us use used uses using very was we were what when where which while who whom
why will with within without would yet you your s t since ago per via etc instead still
already ever
""".split())

_TOKEN = re.compile(r"\w(?:[\w]|[./\-_:@+](?=\w))*")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$|^\s*$|(^|\n)\s*(?:[-*]|\d+[.)])?\s*$")


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, opens a sentence) for each word-like token, identifiers kept whole."""
    out = []
    for m in _TOKEN.finditer(text):
        before = text[max(0, m.start() - 8):m.start()]
        opens = m.start() == 0 or bool(_SENTENCE_END.search(before)) or before.endswith(("\n", '"', "("))
        out.append((m.group(0).rstrip("."), opens))
    return out


def _is_key(token: str, opens: bool) -> bool:
    if any(ch.isdigit() for ch in token):
        return True
    if re.search(r"\w[./\-_:@+]\w", token):
        return True  # an identifier, a path, a file name
    if any(ch.isupper() for ch in token[1:]):
        return True  # an acronym or CamelCase
    return token[:1].isupper() and not opens and token != "I"


def key_terms(text: str) -> set[str]:
    """The fact-carrying words of ``text``, case-folded (see the module's doc)."""
    return {t.casefold() for t, opens in _tokens(text) if _is_key(t, opens)}


def content_words(text: str) -> set[str]:
    """Case-folded words of at least three letters that are not stop words."""
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) >= 3 and w not in STOP_WORDS}


def _vocabulary(sources: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for s in sources:
        folded = s.casefold()
        words.update(t.casefold() for t, _ in _tokens(s))
        words.update(re.findall(r"\w+", folded))
    return words


def _present(term: str, vocabulary: set[str]) -> bool:
    if term in vocabulary:
        return True
    # "report-WEEK.pdf" is present when each of its parts is (it was written as "report-week.pdf"
    # or split over a sentence); a plural or possessive ("servers", "team's") when its stem is.
    parts = re.findall(r"\w+", term)
    if len(parts) > 1:
        return all(p in vocabulary for p in parts)
    return term.rstrip("s") in vocabulary or term + "s" in vocabulary


def ungrounded(text: str, sources: Iterable[str]) -> set[str]:
    """Key terms of ``text`` found in none of ``sources``: specifics the writer made up."""
    vocabulary = _vocabulary(sources)
    return {t for t in key_terms(text) if not _present(t, vocabulary)}


def leaked(text: str, example: str, sources: Iterable[str]) -> set[str]:
    """Words of ``text`` that come from ``example`` and from nowhere in ``sources``:
    a note that carries a key term of the example, or two of its words, repeats
    the prompt's example, not the session (one plain word may be a coincidence)."""
    vocabulary = _vocabulary(sources)
    from_example = _vocabulary([example])
    keys = key_terms(text)
    words = content_words(text) | keys
    found = {w for w in words if _present(w, from_example) and not _present(w, vocabulary)}
    return found if (found & keys or len(found) >= 2) else set()


def lost_facts(old: str, kept: Iterable[str], *, min_share: float = 0.5) -> set[str]:
    """What of ``old`` the texts ``kept`` no longer state: its key terms that are
    missing; or, for a note without key terms, its content words when fewer than
    ``min_share`` of them survive. Empty: every fact of ``old`` is still stated."""
    vocabulary = _vocabulary(kept)
    keys = key_terms(old)
    if keys:
        return {t for t in keys if not _present(t, vocabulary)}
    words = content_words(old)
    if not words:
        return set()
    missing = {w for w in words if not _present(w, vocabulary)}
    return missing if len(words) - len(missing) < min_share * len(words) else set()


def restates_subject(old: str, newer: str, *, min_share: float = 0.5) -> bool:
    """Whether ``newer`` speaks about what ``old`` spoke about (at least ``min_share``
    of ``old``'s content words that are not key terms): then ``newer`` can
    retire ``old`` as stale or contradicted ("in Berlin" → "in Munich")."""
    subject = content_words(old) - key_terms(old)
    if not subject:
        return False
    vocabulary = _vocabulary([newer])
    return sum(_present(w, vocabulary) for w in subject) >= min_share * len(subject)


__all__ = ["STOP_WORDS", "content_words", "key_terms", "leaked", "lost_facts", "restates_subject",
           "ungrounded"]
