"""Long-context benchmarks, generated offline from a seed.

- ``tasks``: the task interface, ``get_task(name, **options)`` and the suites.
- ``mqar``: multi-query associative recall (Zoology).
- ``niah``: RULER-style needle in a haystack and variable tracking.
- ``babi`` / ``babilong``: a bAbI world (qa1-qa5) and its stories in book text.
- ``haystack``: the text the haystacks are made of (essays, book text, noise, keys).
- ``tokenizer``: byte-level and BPE tokenizers named by spec strings.
- ``evaluate``: accuracy by length of a model, reports and plots (``lifelong bench run``).
"""

from lifelong.bench.tasks import SUITES, EvalExample, get_task, parse_lengths, suite_tasks
from lifelong.bench.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "SUITES",
    "EvalExample",
    "Tokenizer",
    "get_task",
    "load_tokenizer",
    "parse_lengths",
    "suite_tasks",
]
