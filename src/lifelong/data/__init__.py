"""Long-context task generators, generated offline from a seed: one generator + scorer per file.

- ``base``: the ``SequenceTask`` interface and the shared machinery of the text tasks.
- ``registry``: ``get_task(name, **options)``, the suites, lengths, mixtures of tasks.
- ``mqar``: multi-query associative recall (Zoology).
- ``niah``: RULER-style needle in a haystack and variable tracking.
- ``babi`` / ``babilong``: a bAbI world (qa1-qa5) and its stories in book text.
- ``classinc`` / ``novel_lang``: continual-learning streams (class-incremental intents;
  translation of generated languages, scored with chrF).
- ``haystack``: the text the haystacks are made of (essays, book text, noise, keys).
- ``templates``: the fixed sentences of the text tasks.
- ``tokenizer``: byte-level and BPE tokenizers named by spec strings.
"""
