"""Tags on notes and documents: short words, one rule for both."""

from __future__ import annotations

import re
from collections.abc import Sequence

from lifelong.errors import ValidationError

TAG_RE = re.compile(r"^[\w.:/-]{1,40}$")
TAG_RULE = "tags are 1-40 characters: letters, digits, _ . : / -"


def is_tag(text: object) -> bool:
    return isinstance(text, str) and TAG_RE.fullmatch(text) is not None


def check_tags(tags: Sequence[str] | str) -> list[str]:
    """The tags, deduplicated in order; a ``ValidationError`` names the bad ones."""
    if isinstance(tags, str):
        tags = [tags]
    bad = [t for t in tags if not is_tag(t)]
    if bad:
        raise ValidationError(f"invalid tags {bad!r}", hint=TAG_RULE)
    return list(dict.fromkeys(tags))
