"""The fixed sentences of the text tasks (RULER's NIAH and variable-tracking templates).

They live apart from the generators so that the BPE's training text can include
every template (``template_text``) without the tokenizer importing a generator.
"""

from __future__ import annotations

from lifelong.data import babi, haystack

HEADER = (
    "Some special magic {kind} are hidden within the following text. "
    "Make sure to memorize it. I will quiz you about the {kind} afterwards.\n"
)
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
QUESTION = "\nWhat are all the special magic {kind} for {query} mentioned in the provided text?"
ANSWER_PREFIX = " The special magic {kind} for {query} mentioned in the provided text are"

VT_HEADER = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
VT_QUESTION = (
    "\nQuestion: Find all variables that are assigned the value {value} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above,"
    " {n} variables are assigned the value {value}, they are:"
)


def niah_lines() -> list[str]:
    lines = list(haystack.NOISE_SENTENCES)
    for kind in ("numbers", "uuids"):
        lines += [
            HEADER.format(kind=kind),
            NEEDLE.format(kind=kind, key="key", value="0"),
            QUESTION.format(kind=kind, query="key") + ANSWER_PREFIX.format(kind=kind, query="key"),
        ]
    return lines + [VT_HEADER, VT_QUESTION.format(value="0"), VT_ANSWER_PREFIX.format(n=5, value=0)]


def template_text() -> str:
    """The fixed words of every text task, so the BPE learns them as whole tokens."""
    return "\n".join(niah_lines() + babi.template_lines())
