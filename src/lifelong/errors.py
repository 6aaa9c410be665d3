"""One family of errors. Each says what went wrong and what to do about it.

The CLI prints ``str(error)`` without a traceback; anything that is not a
``LifelongError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class LifelongError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  → {hint}")


class ConfigError(LifelongError):
    """A spec, option or config file that cannot be used as given."""


class ModelError(LifelongError):
    """A model that cannot be loaded, reached or asked what was asked."""


class ContextOverflowError(ModelError):
    """A prompt longer than the model's context window."""


class StoreError(LifelongError):
    """Storage refused an operation; nothing stored was changed."""


class NotFoundError(LifelongError):
    """A note, document, namespace or state that does not exist."""


class ValidationError(LifelongError):
    """Malformed input: empty or over-long text, bad path, bad front matter."""


class BudgetExceededError(LifelongError):
    """A write that would push the notes block over its token budget."""


class StateError(LifelongError):
    """A memory state that does not fit the module or file it meets."""


class LifelongWarning(UserWarning):
    """Something the user should know, that did not stop the work. The CLI prints one line."""


class BudgetWarning(LifelongWarning):
    """A memory over its token budget, used anyway (e.g. after the budget was lowered)."""


class CheckpointWarning(LifelongWarning):
    """A damaged checkpoint that was skipped for an earlier, intact one."""
